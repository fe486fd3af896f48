"""Evaluation: eval sets, candidates with cached answers, reference metrics, an
LLM judge (pairwise in both orders, single-answer grading; a local judge's verdicts
constrained to the allowed labels) and aggregates."""

from finetune_core.evaluate.aggregate import (
    bradley_terry,
    by_category,
    calibrated_pair_summary,
    consistency_rate,
    grade_summary,
    judge_agreement,
    judge_votes,
    pair_summary,
    ranking,
)
from finetune_core.evaluate.cache import AnswerCache
from finetune_core.evaluate.candidates import (
    Answer,
    Candidate,
    Decoding,
    ModelPool,
    generate_answers,
    parse_candidate,
)
from finetune_core.evaluate.constrained import (
    PAIRWISE_OPTIONS,
    RATING_OPTIONS,
    ConstrainedVerdict,
    VerdictOptions,
    balanced_position,
    constrained_verdicts,
)
from finetune_core.evaluate.endpoint import Budget, Endpoint, Reply
from finetune_core.evaluate.export import write_csv, write_json
from finetune_core.evaluate.judge import Judge, Judgment, LocalBackend, PairResult, combine
from finetune_core.evaluate.metrics import exact_match, normalize_answer
from finetune_core.evaluate.prompts import (
    PAIRWISE,
    PAIRWISE_REFERENCE,
    PAIRWISE_REFERENCE_VERDICT_FIRST,
    PAIRWISE_VERDICT_FIRST,
    SINGLE,
    SINGLE_REFERENCE,
    SINGLE_REFERENCE_VERDICT_FIRST,
    SINGLE_VERDICT_FIRST,
    PromptTemplate,
)
from finetune_core.evaluate.run import make_judge, run_evaluation
from finetune_core.evaluate.sets import (
    EvalItem,
    EvalSet,
    from_bigbench,
    from_dataset,
    from_prompt_file,
    make_item,
)
from finetune_core.evaluate.stats import bootstrap_ci
from finetune_core.evaluate.verdict import parse_rating, parse_verdict

__all__ = [
    "PAIRWISE",
    "PAIRWISE_OPTIONS",
    "PAIRWISE_REFERENCE",
    "PAIRWISE_REFERENCE_VERDICT_FIRST",
    "PAIRWISE_VERDICT_FIRST",
    "RATING_OPTIONS",
    "SINGLE",
    "SINGLE_REFERENCE",
    "SINGLE_REFERENCE_VERDICT_FIRST",
    "SINGLE_VERDICT_FIRST",
    "Answer",
    "AnswerCache",
    "Budget",
    "Candidate",
    "ConstrainedVerdict",
    "Decoding",
    "Endpoint",
    "EvalItem",
    "EvalSet",
    "Judge",
    "Judgment",
    "LocalBackend",
    "ModelPool",
    "VerdictOptions",
    "PairResult",
    "PromptTemplate",
    "Reply",
    "balanced_position",
    "bootstrap_ci",
    "bradley_terry",
    "by_category",
    "calibrated_pair_summary",
    "combine",
    "constrained_verdicts",
    "consistency_rate",
    "exact_match",
    "from_bigbench",
    "from_dataset",
    "from_prompt_file",
    "generate_answers",
    "grade_summary",
    "judge_agreement",
    "judge_votes",
    "make_item",
    "make_judge",
    "normalize_answer",
    "pair_summary",
    "parse_candidate",
    "parse_rating",
    "parse_verdict",
    "ranking",
    "run_evaluation",
    "write_csv",
    "write_json",
]
