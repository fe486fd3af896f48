"""Which function runs a cell of each kind. A new runnable kind adds one line here.

A runner takes (cell run, job id, celery task id) and settles both the CellRun and the
Job whatever happens, so the task around it only has to route.
"""

from __future__ import annotations

from collections.abc import Callable

from webapp.projects.models import CellRun
from workers.eval_run import run_evaluation_cell
from workers.finetune_run import run_finetune
from workers.playground_run import run_playground
from workers.transfer_run import run_transfer

Runner = Callable[[CellRun, int, str], None]

RUNNERS: dict[str, Runner] = {
    "finetune": run_finetune,
    "playground": run_playground,
    "transfer": run_transfer,
    "evaluation": run_evaluation_cell,
}
