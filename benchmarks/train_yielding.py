"""bench-serve's fine-tune with a CPU worker's manners: `python -m finetune_core train`'s run,
whose stop check first waits while the serving process on this host is busy, as a fine-tune
on a CPU worker does beside it (workers/between_steps.YieldToServing; SERVING_URL as the
serving process's).

    python -m benchmarks.train_yielding [finetune_core train flags ...]
"""

from __future__ import annotations

import os
import socket
import sys


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from finetune_core import cli
    from workers.between_steps import YieldToServing

    args = cli._parser().parse_args(["train", *argv])
    between = YieldToServing(socket.gethostname())
    return cli._run_training(cli._train_config(args), resume=False, between=between)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
