"""The one settings module. Every value comes from the environment through webapp.env."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from finetune_core.contracts import egress
from webapp.env import (
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_path,
    env_str,
    generated_secret,
    parse_database_url,
)
from webapp.storage_url import storages_for

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("DATA_DIR", BASE_DIR / "var")

# Off unless switched on: Django's debug pages show settings and source to any visitor.
DEBUG = env_bool("DEBUG", False)
# Unset, SECRET_KEY is generated once into DATA_DIR (mode 0600) and kept, so the embedded
# default needs no set-up and no key is public. Hosts that share no DATA_DIR must all be
# given the same SECRET_KEY. A key that was ever in Tunebook's source is refused.
SECRET_KEY = env_str("SECRET_KEY", "") or generated_secret(DATA_DIR / "secret_key")
if SECRET_KEY in {"dev-only-insecure-secret-key-change-me"}:
    raise ImproperlyConfigured(
        "SECRET_KEY is the public development key from Tunebook's source. Set SECRET_KEY to "
        "a long random value, e.g. the output of "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))', or leave it unset "
        "to have one generated in DATA_DIR/secret_key."
    )
# Earlier keys, newest first (comma-separated): sessions and stored judge API keys made
# under them still read, and `manage.py judge_keys_reencrypt` moves the keys to SECRET_KEY.
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS", [])
_LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", _LOCAL_HOSTS)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

DATABASES = {
    "default": parse_database_url(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'tunebook.sqlite3'}")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

MEDIA_ROOT = env_path("MEDIA_ROOT", DATA_DIR / "media")
# Every file the product keeps: local folders by default, or an S3-compatible bucket.
STORAGES = {
    **storages_for(env_str("STORAGE_URL", ""), aws_bucket=env_str("AWS_STORAGE_BUCKET_NAME", "")),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# With object storage, a worker trains in its own scratch folder (cleaned after each job,
# and its oldest leftovers removed over the cap) and uploads each checkpoint as it is saved.
SCRATCH_DIR = env_path("SCRATCH_DIR", DATA_DIR / "scratch")
SCRATCH_MAX_BYTES = env_int("SCRATCH_MAX_BYTES", 50 * 1024**3, minimum=0)
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
# collectstatic's output; an image sets it outside DATA_DIR, which is a volume at run time.
STATIC_ROOT = env_path("STATIC_ROOT", DATA_DIR / "static")
STATICFILES_DIRS = [BASE_DIR / "webapp" / "static"]
# WhiteNoise serves STATIC_ROOT (collectstatic), and the apps' own static folders as found,
# so `make run` serves them with no collectstatic step.
WHITENOISE_USE_FINDERS = True

# Dataset uploads stream to disk; the limit is enforced chunk by chunk.
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 200 * 1024 * 1024, minimum=1)
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "uploads-tmp")
FILE_UPLOAD_PERMISSIONS = 0o640

# No server needed by default: kombu's SQLAlchemy transport on a SQLite file.
CELERY_BROKER_URL = env_str(
    "CELERY_BROKER_URL", f"sqla+sqlite:///{DATA_DIR / 'celery-broker.sqlite'}"
)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 600, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 660, minimum=1)
if CELERY_TASK_TIME_LIMIT <= CELERY_TASK_SOFT_TIME_LIMIT:
    raise ImproperlyConfigured(
        "CELERY_TASK_TIME_LIMIT must be larger than CELERY_TASK_SOFT_TIME_LIMIT"
    )

# /v1/chat/completions waits this long for a worker's answer before a 504.
API_CHAT_TIMEOUT_S = env_int("API_CHAT_TIMEOUT_S", 120, minimum=1)
# API limits (/v1/ and /api/): requests per key per window (0 = off), JSON body size,
# and how long an Idempotency-Key's first response is replayed.
API_RATE_LIMIT = env_int("API_RATE_LIMIT", 600, minimum=0)
API_RATE_LIMIT_WINDOW_S = env_int("API_RATE_LIMIT_WINDOW_S", 60, minimum=1)
# Requests with a missing or wrong key, per address per window: a small separate budget.
API_RATE_LIMIT_FAILED = env_int("API_RATE_LIMIT_FAILED", 30, minimum=1)
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
API_IDEMPOTENCY_TTL_S = env_int("API_IDEMPOTENCY_TTL_S", 24 * 60 * 60, minimum=60)
# The longest an API request may run (the web server's worker timeout should match): an
# Idempotency-Key still "in progress" after this was left by a crashed request, and is freed.
API_REQUEST_TIME_LIMIT_S = env_int("API_REQUEST_TIME_LIMIT_S", 600, minimum=1)
if API_REQUEST_TIME_LIMIT_S <= API_CHAT_TIMEOUT_S:
    raise ImproperlyConfigured("API_REQUEST_TIME_LIMIT_S must be larger than API_CHAT_TIMEOUT_S")
# The serving path (python -m workers.serve, issue 25): chat answers (/v1/chat/completions,
# the playground) go to the serving process through this wire, not to a Celery task. By
# default the broker's Redis, or with the SQLite broker (the embedded default) an SQLite
# file beside it (one host); any other broker: the Celery path unless SERVING_URL is set.
# "off" keeps the Celery path. Transports: webapp/jobs/serving_wire.py.
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    _serving_default = CELERY_BROKER_URL
elif CELERY_BROKER_URL.startswith("sqla+sqlite://"):
    _serving_default = f"sqlite:///{DATA_DIR / 'serving.sqlite3'}"
else:
    _serving_default = ""
SERVING_URL = env_str("SERVING_URL", _serving_default)
SERVING_URL = "" if SERVING_URL == "off" else SERVING_URL
if SERVING_URL and not SERVING_URL.startswith(("redis://", "rediss://", "sqlite:///")):
    raise ImproperlyConfigured(
        f"SERVING_URL must be a redis:// or sqlite:/// URL, or off; got {SERVING_URL!r}"
    )
# Requests waiting for the serving process beyond this many: 429 with Retry-After.
SERVE_QUEUE_MAX = env_int("SERVE_QUEUE_MAX", 64, minimum=1)
SERVE_RETRY_AFTER_S = env_int("SERVE_RETRY_AFTER_S", 2, minimum=1)
# A request not started by the serving process within this fails with queue_timeout.
SERVE_QUEUE_TIMEOUT_S = env_int("SERVE_QUEUE_TIMEOUT_S", 30, minimum=1)
# Requests one serving process decodes at once (its continuous batch's rows).
SERVE_MAX_BATCH = env_int("SERVE_MAX_BATCH", 32, minimum=1)
# Base models the serving process keeps loaded; "fp32": exact answers (a greedy answer in a
# batch is token for token the one alone), "auto": the device's fastest dtype (bf16 parts).
SERVE_MAX_BASES = env_int("SERVE_MAX_BASES", 2, minimum=1)
SERVE_DTYPE = env_choice("SERVE_DTYPE", "auto", ("auto", "fp32"))
# Judge and candidate endpoints (base URLs users type) may reach public addresses only; these
# hosts are the exceptions, e.g. an on-premises judge: "judge.internal,10.0.0.5:8080"
# (finetune_core/contracts/egress.py). The web checks URLs with it; workers pass it on.
EGRESS_ALLOW_HOSTS = env_str(egress.ALLOW_ENV, "")
try:
    egress.EgressPolicy.parse(EGRESS_ALLOW_HOSTS)
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None

# Rate-limit counters live in the cache: Redis when CACHE_URL says so (shared by every
# web process), else this process's memory (the embedded single-process default).
CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL and not CACHE_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured(
        f"CACHE_URL must start with redis:// or rediss://, got {CACHE_URL!r}"
    )
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "tunebook"}
    )
}

# Per-team limits (0 or blank = unlimited): bytes of dataset files a team keeps, jobs it
# may have queued or running at once, optimizer steps one fine-tune may take, and
# checkpoints a fine-tune keeps on disk (the newest; older ones are deleted as it trains).
TEAM_STORAGE_BYTES = env_int("TEAM_STORAGE_BYTES", 0, minimum=0)
TEAM_ACTIVE_JOBS = env_int("TEAM_ACTIVE_JOBS", 0, minimum=0)
TEAM_MAX_STEPS = env_int("TEAM_MAX_STEPS", 0, minimum=0)
TEAM_CHECKPOINTS_KEPT = env_int("TEAM_CHECKPOINTS_KEPT", 0, minimum=0)
# Turns between teams on the GPU queue: at most this many of a team's jobs are in the
# broker at once; the rest wait in the database and are sent, team by team, as jobs finish
# (webapp/jobs/turns.py), so one team's 50 jobs do not starve another's one. 0: no turns.
TEAM_GPU_JOBS_SENT = env_int("TEAM_GPU_JOBS_SENT", 0, minimum=0)

# A merged export compares the merged 16-bit model with the model as trained on this many
# prompts (mean KL, greedy agreement in its export.json); 0 skips the comparison.
EXPORT_MEASURE_PROMPTS = env_int("EXPORT_MEASURE_PROMPTS", 50, minimum=0)

# Stale-job recovery (manage.py jobs_recover, or the periodic task under celery beat).
JOB_STALE_AFTER_S = env_int("JOB_STALE_AFTER_S", 600, minimum=1)
# How many times a job may start (a worker, or stale-job recovery, handing it out again
# after its process died: the out-of-memory killer, most often) before it is failed.
JOB_MAX_DELIVERIES = env_int("JOB_MAX_DELIVERIES", 3, minimum=1)
# How often celery beat runs that recovery (workers/celery.py's beat_schedule reads it).
JOB_RECOVER_EVERY_S = env_int("JOB_RECOVER_EVERY_S", 60, minimum=1)
# How long a worker's progress writes retry while the database is unreachable (a restart)
# before the run gives up; shorter than JOB_STALE_AFTER_S, so recovery never takes a run
# whose worker is only waiting for the database (by default half of it, at most 300 s).
WORKER_DB_RETRY_S = env_int("WORKER_DB_RETRY_S", min(300, JOB_STALE_AFTER_S // 2), minimum=0)
if WORKER_DB_RETRY_S >= JOB_STALE_AFTER_S:
    raise ImproperlyConfigured(
        f"WORKER_DB_RETRY_S ({WORKER_DB_RETRY_S}) must be smaller than JOB_STALE_AFTER_S "
        f"({JOB_STALE_AFTER_S}): recovery would take runs whose worker is only waiting"
    )
# Each worker refreshes its record (ops.WorkerHost: host, device, queues, cached models)
# this often; one quiet for WORKER_LOST_AFTER_S is shown as lost. WORKER_DEVICE_MEMORY_BYTES
# reports that much device memory instead of what the worker finds (0: what it finds).
WORKER_HEARTBEAT_S = env_int("WORKER_HEARTBEAT_S", 30, minimum=1)
WORKER_LOST_AFTER_S = env_int("WORKER_LOST_AFTER_S", 3 * WORKER_HEARTBEAT_S, minimum=1)
if WORKER_LOST_AFTER_S <= WORKER_HEARTBEAT_S:
    raise ImproperlyConfigured(
        f"WORKER_LOST_AFTER_S ({WORKER_LOST_AFTER_S}) must be longer than WORKER_HEARTBEAT_S "
        f"({WORKER_HEARTBEAT_S}), or every worker would show as lost between heartbeats"
    )
WORKER_DEVICE_MEMORY_BYTES = env_int("WORKER_DEVICE_MEMORY_BYTES", 0, minimum=0)
# The queues a fine-tune may be routed to, named by the operator by what their workers
# hold (e.g. gpu-80g,gpu-24g,cpu): each job goes to the smallest that its memory estimate
# fits among those alive workers serve; none alive: the first, where it waits.
TRAINING_QUEUES = env_list("TRAINING_QUEUES", ["gpu"])
# A background job (keeping an adapter transferable) steps aside for any job a person
# started (a playground answer, a fine-tune, ...) that has waited this long on a queue its
# worker serves.
INTERACTIVE_WAIT_S = env_int("INTERACTIVE_WAIT_S", 5, minimum=0)
# Between its optimizer steps a fine-tune makes way for people (workers/between_steps.py):
# without the serving process it answers the chats and playground runs that have waited
# that long on its worker's queues; on a CPU beside the serving process it waits while
# that process is busy. 0: neither.
ANSWER_BETWEEN_STEPS = env_bool("ANSWER_BETWEEN_STEPS", True)
# Redis redelivers an unacknowledged task after this long; it must outlast the longest run.
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 7 * 60 * 60}

INSTALLED_APPS = [
    "django.contrib.admin",  # /admin/, for operators (staff only)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    "ninja",  # the native API; listed so its docs page uses the vendored static files
    "webapp.core",
    "webapp.accounts",
    "webapp.teams",
    "webapp.jobs",
    "webapp.datasets",
    "webapp.projects",
    "webapp.transfers",
    "webapp.api",
    "webapp.evaluations",
    "webapp.exports",
    "webapp.ops",
    "webapp.home",
]

MIDDLEWARE = [
    "webapp.ops.metrics.LatencyMiddleware",  # first, so it times the whole answer
    "webapp.core.request_id.RequestIdMiddleware",  # before anything that may log
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",  # static files, with DEBUG off too
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "webapp.api.middleware.ApiGuardMiddleware",  # /v1/ and /api/: size, rate, idempotency
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

# /metrics: with a token, scrapes send "Authorization: Bearer <token>"; without, only
# localhost may read it (webapp/ops/access.py).
METRICS_TOKEN = env_str("METRICS_TOKEN", "")

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "webapp" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Log-in throttling (webapp/accounts/throttle.py): after LOGIN_FAILURE_LIMIT failed log-ins
# for one account, or LOGIN_FAILURE_LIMIT_PER_ADDRESS from one address, within
# LOGIN_FAILURE_WINDOW_S of the first, its log-ins are refused until that window ends.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
LOGIN_FAILURE_LIMIT_PER_ADDRESS = env_int("LOGIN_FAILURE_LIMIT_PER_ADDRESS", 20, minimum=1)
LOGIN_FAILURE_WINDOW_S = env_int("LOGIN_FAILURE_WINDOW_S", 15 * 60, minimum=1)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")

# Secure cookies need HTTPS; a site that answers only on this machine (the default
# ALLOWED_HOSTS, as `make run`) is served over plain http.
SECURE_COOKIES = env_bool("SECURE_COOKIES", not set(ALLOWED_HOSTS) <= set(_LOCAL_HOSTS))
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

# LOG_FORMAT=json: one JSON object a line (time, level, logger, message, request_id), for
# the web and, through workers/celery.py, the workers; text (default) stays plain.
LOG_FORMAT = env_choice("LOG_FORMAT", "text", ("text", "json"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "webapp.core.logs.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(message)s"},
        "json": {"()": "webapp.core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["request_id"],
            "formatter": LOG_FORMAT,
        }
    },
    "root": {
        "handlers": ["console"],
        "level": env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    },
}
