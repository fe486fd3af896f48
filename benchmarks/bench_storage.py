"""make bench-storage: the storage layer (webapp.core.storage) against a plain boto3 copy,
and the web process's memory while a large file streams in and out of the bucket.

Starts moto's standalone S3 server on loopback (tests/s3server.py), then, alternating so that
load drift hits both sides, uploads and downloads one object of --mb megabytes through our
layer (django-storages' S3Storage + webapp.core.storage) and through boto3's own
upload_file/download_file with its default transfer settings (threaded multipart: the best
stock configuration). Prints per-side medians in MB/s, the ratios (ours / boto3), and one
JSON line last. Both sides talk to the same server, so the ratio is the layer's overhead.

With --web-mb N (0: skip), a gunicorn web process on the same bucket receives an N MB
upload through /v1/files and streams it back; its peak RSS is sampled every 20 ms and
printed beside its idle RSS: it must stay flat, not grow with the file.

With --checkpoint-steps N (0: skip), SmolLM2-135M-Instruct fine-tunes N steps in a worker's
run space on the bucket, saving every --save-every steps, and each checkpoint goes up
through the worker's own RunSpace.publish_checkpoint: its size, upload time and the upload
as a share of training time (benchmarks/bench_checkpoint_upload.py).

    python -m benchmarks.bench_storage [--mb 128] [--repeats 3] [--web-mb 1024]
        [--checkpoint-steps 10] [--save-every 5] [--threads N]

--mb 0 skips the copy comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=128, help="object size in MB")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--web-mb", type=int, default=1024, help="0: skip the web memory run")
    parser.add_argument("--checkpoint-steps", type=int, default=10, help="0: skip")
    parser.add_argument("--save-every", type=int, default=5, help="checkpoint every N steps")
    parser.add_argument("--threads", type=int, help="CPU threads for training")
    args = parser.parse_args()

    from tests.s3server import credentials_env, s3_server

    os.environ.update(credentials_env())
    with s3_server() as s3, tempfile.TemporaryDirectory() as tmp:
        bucket = s3.make_bucket("bench")
        os.environ["STORAGE_URL"] = s3.url(bucket)
        os.environ["DATA_DIR"] = str(Path(tmp) / "data")  # the worker's scratch goes there
        root = Path(__file__).resolve().parents[1]
        os.environ.setdefault("FINETUNE_CORE_CACHE", str(root / ".cache"))  # as the Makefile
        django.setup()

        runs = copies(s3, bucket, Path(tmp), args) if args.mb else {}
        web = web_memory(s3, bucket, Path(tmp), args.web_mb) if args.web_mb else {}
        ckpt = checkpoints(args) if args.checkpoint_steps else {}

    result: dict[str, Any] = {}
    if runs:
        result |= print_copies(runs, args.mb)
    if web:
        print(
            f"web process RSS, MiB: idle {web['idle_rss_mib']}, during a {args.web_mb} MB upload "
            f"{web['upload_peak_rss_mib']}, during its download {web['download_peak_rss_mib']}"
        )
    if ckpt:
        from benchmarks.bench_checkpoint_upload import print_overhead

        print_overhead(ckpt)
        ckpt = {"checkpoint_upload": ckpt}
    print(json.dumps(result | web | ckpt))


def checkpoints(args: argparse.Namespace) -> dict[str, Any]:
    from benchmarks.bench_checkpoint_upload import checkpoint_overhead

    return checkpoint_overhead(
        steps=args.checkpoint_steps, save_every=args.save_every, threads=args.threads
    )


def copies(s3: Any, bucket: str, tmp: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    """Upload and download times of one --mb object, ours and boto3's, alternating."""
    from webapp.core import storage

    src = tmp / "src.bin"
    src.write_bytes(os.urandom(args.mb * 1024 * 1024))
    client = s3.client()
    store = storage.artifacts()
    raw_key = f"{store.location}/raw.bin"
    runs: dict[str, list[float]] = {
        k: [] for k in ("up_ours", "up_boto3", "down_ours", "down_boto3")
    }
    out = tmp / "out.bin"
    for _ in range(args.repeats):
        runs["up_ours"].append(timed(lambda: storage.put_file("ours.bin", src)))
        runs["up_boto3"].append(timed(lambda: client.upload_file(str(src), bucket, raw_key)))
        runs["down_ours"].append(timed(lambda: storage.get_file("ours.bin", out)))
        assert out.stat().st_size == src.stat().st_size
        runs["down_boto3"].append(timed(lambda: client.download_file(bucket, raw_key, str(out))))
    return runs


def print_copies(runs: dict[str, list[float]], mb: int) -> dict[str, float]:
    speed = {k: mb / statistics.median(v) for k, v in runs.items()}
    print(f"{'':10}{'ours MB/s':>12}{'boto3 MB/s':>12}{'ratio':>8}   ({mb} MB, moto on loopback)")
    result: dict[str, float] = {"mb": mb}
    for way in ("up", "down"):
        ours, stock = speed[f"{way}_ours"], speed[f"{way}_boto3"]
        print(f"{way + 'load':10}{ours:12.1f}{stock:12.1f}{ours / stock:8.2f}")
        result |= {f"{way}load_mb_s": round(ours, 1), f"{way}load_boto3_mb_s": round(stock, 1)}
        result[f"{way}load_ratio_vs_boto3"] = round(ours / stock, 3)
    return result


class PeakRss:
    """Samples the RSS of a process and its children; `peak()` since the last `reset()`."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.proc, self.top, self.stop = psutil.Process(pid), 0, threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def now(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs)

    def _sample(self) -> None:
        while not self.stop.wait(0.02):
            self.top = max(self.top, self.now())

    def reset(self) -> None:
        self.top = self.now()

    def peak_mib(self) -> float:
        return round(self.top / 2**20, 1)


def web_memory(s3: Any, bucket: str, tmp: Path, mb: int) -> dict[str, float]:
    """Peak RSS of a gunicorn web process while `mb` MB stream in through /v1/files and out."""
    import openai

    from tests.hosts import MAKE_KEY, wait_port
    from tests.s3server import free_port

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DATA_DIR": str(tmp / "web"), "STORAGE_URL": s3.url(bucket, "web")}
    env |= {"MAX_UPLOAD_BYTES": str((mb + 16) * 2**20), "DJANGO_SETTINGS_MODULE": "webapp.settings"}
    env.pop("DATABASE_URL", None)  # its own SQLite database
    manage = [sys.executable, str(root / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, cwd=root, check=True)
    made = subprocess.run([*manage, "shell", "-c", MAKE_KEY], env=env, cwd=root, check=True,
                          capture_output=True, text=True).stdout  # fmt: skip
    key = made.split("KEY=", 1)[1].split()[0]
    port = free_port()
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log = (tmp / "web.log").open("wb")  # printed if the web fails
    web = subprocess.Popen([str(gunicorn), "webapp.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1",
                            "--timeout", "600"], env=env, cwd=root, stderr=log)  # fmt: skip
    try:
        wait_port("127.0.0.1", port, timeout=60, what="gunicorn")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=600)
        client.models.list()  # every module loaded: the idle figure is the working one
        big = tmp / "big.jsonl"
        line = b'{"messages": [{"role": "user", "content": "' + b"x" * 1000 + b'"}]}\n'
        with open(big, "wb") as out:
            for _ in range(mb * 2**20 // len(line)):
                out.write(line)
        rss = PeakRss(web.pid)
        time.sleep(0.5)
        idle = rss.peak_mib()
        rss.reset()
        with open(big, "rb") as handle:
            try:
                sent = client.files.create(file=("big.jsonl", handle), purpose="fine-tune")
            except openai.APIStatusError:
                sys.exit((tmp / "web.log").read_text(errors="replace")[-4000:])
        upload = rss.peak_mib()
        rss.reset()
        size = 0
        with client.files.with_streaming_response.content(sent.id) as response:
            for chunk in response.iter_bytes():
                size += len(chunk)
        assert size == big.stat().st_size, (size, big.stat().st_size)
        rss.stop.set()
        return {"web_mb": mb, "idle_rss_mib": idle, "upload_peak_rss_mib": upload,
                "download_peak_rss_mib": rss.peak_mib()}  # fmt: skip
    finally:
        web.terminate()
        web.wait(timeout=30)
        log.close()


if __name__ == "__main__":
    main()
