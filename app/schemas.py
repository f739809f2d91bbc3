"""The JSON API's bodies, declared once: pydantic models validate requests, shape responses, and
generate the OpenAPI document's schemas (app/openapi.py)."""
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.attribution import METHODS
from models.runtimes import RUNTIMES
from models.tokenizer import MAX_ANSWER_CHARS, MAX_QUESTION_CHARS, QuestionError, Tokenizer

ERROR_CODES = ("invalid_json", "invalid_request", "invalid_type", "empty_question", "question_too_long",
               "invalid_character", "unknown_field", "unknown_model", "too_many_questions", "not_found",
               "method_not_allowed", "body_too_large", "model_unavailable", "overloaded", "unsupported_media_type",
               "bad_request", "http_error", "unavailable", "internal_error")
REASON_CODES = ("not_task_form", "unknown_place_name", "irregular_wording", "leading_zeros", "number_too_long",
                "place_unseen", "place_rare", "place_beyond_number")
Question = Field(min_length=1, max_length=MAX_QUESTION_CHARS, examples=["What is the tens digit of 89290?"],
                 description="space plus printable ASCII letters, digits and punctuation")
Model = Field(default=None, description="the backend; the server's default if omitted")
Asked = Field(description="the question as the backend was asked it: the trained wording (capitals, runs of "
                          "spaces and thousands separators mapped to it)")
Answer = Field(max_length=MAX_ANSWER_CHARS)
Latency = Field(ge=0, description="milliseconds of the batched pass the answer rode in")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Request(Body):
    model_config = ConfigDict(extra="forbid", strict=True)  # no coercion: 7 is not a question


class SingleRequest(Request):
    question: str = Question
    model: str = Model


class BatchRequest(Request):
    questions: list[str] = Field(min_length=1, description="answered in one batched pass")
    model: str = Model


class Reason(Body):
    code: Literal[REASON_CODES]
    message: str


class Check(Body):
    """The exact answer computed in code, whether the backend got it, and why the question lies outside
    the training distribution (no reasons: inside it)."""
    expected: str | None = Field(description="null when the question is not the task's form")
    correct: bool | None
    in_distribution: bool
    reasons: list[Reason]


class SingleAnswer(Body):
    answer: str = Answer
    check: Check
    question: str = Asked
    submitted: str = Field(description="the question as sent")
    model: str
    latency_ms: float = Latency


class BatchAnswer(Body):
    answers: list[str]
    checks: list[Check]
    questions: list[str] = Asked
    model: str
    count: int = Field(ge=1)
    latency_ms: float = Latency


class Attribution(Body):
    """Per-character attributions of the answer by the method valid for the backend."""
    characters: list[str]
    scores: list[float] = Field(description="the method's score per character; they add up to explained_change "
                                            "within completeness_gap")
    method: Literal[METHODS] = Field(description="integrated_gradients where gradients see the model, "
                                                 "shapley_value_sampling where hashing hides it from them")
    target: str
    baseline: str
    steps: int | None = Field(description="Integrated Gradients' steps; null for the other method")
    samples: int | None = Field(description="Shapley value sampling's permutations; null for the other method")
    explained_change: float = Field(description="the target at the question less at the baseline")
    completeness_gap: float = Field(ge=0, description="|sum of scores - explained_change| / |explained_change|")
    complete: bool = Field(description="completeness gap within 5%")
    word_scores: list[float] | None = Field(description="the words' occlusion scores where the method leaves the "
                                                        "words out of its sum (Integrated Gradients)")
    occlusion: list[float] = Field(description="cross-check: the change when each digit or word is blanked alone, "
                                               "spread over its characters")
    computed_on: str = Field(description="always the torch float32 model")
    served_by: Literal[RUNTIMES] = Field(description="the runtime that produced the answer")


class Explanation(SingleAnswer):
    attribution: Attribution


class ErrorDetail(Body):
    code: Literal[ERROR_CODES]
    message: str
    request_id: str | None


class Error(Body):
    error: ErrorDetail


class Reliability(BaseModel):
    evaluation: str
    runtime: str = Field(description="what answered during the evaluation")
    int8_kernel: str | None = Field(description="for an int8 evaluation, the int8 kernel class it ran on: vnni (a "
                                                "CPU with a dot-product instruction), avx2, other, or the GPU")
    accuracy: float
    total: int
    per_place: dict[str, float]
    per_place_total: dict[str, int]


class BackendRow(BaseModel):
    """One backend as /models reports it; the fields after `error` are there once its checkpoint is loaded."""
    name: str
    display_name: str
    paper: str
    summary: str
    shipped: bool
    required: bool
    ready: bool
    train_command: str
    runtime: Literal[RUNTIMES] | None = Field(description="what runs its passes; null when not loaded")
    runtime_label: str | None = Field(description="the runtime, for people")
    error: str | None = None
    parameters: int | None = None
    architecture: dict | None = Field(default=None, description="layers, widths, the backend's own settings, and positions: "
                               "source (absolute sinusoids counted from the number's start or end), digits (abacus "
                               "place embeddings or none), relative (attention biases: none, rope or alibi)")
    configuration: str | None = Field(default=None, description="how its checkpoint's settings build the backend, "
                                      "and where they differ from its authors' defaults")
    checkpoint_sha256: str | None = None
    checkpoint_bytes: int | None = None
    weights_format: str | None = None
    training_steps: int | None = None
    training_balanced_share: float | None = Field(default=None, description="share of place-balanced questions in its "
                                           "training batches (recorded recipe); the answer check's place_rare uses it")
    accuracy: dict[str, float] | None = None
    interpolate_accuracy: float | None = None
    reliability: dict[str, Reliability] | None = Field(default=None, description="per split (interpolate, train, "
                                                "extrapolate): the recorded evaluation's accuracy per place name")


class Models(BaseModel):
    models: list[BackendRow]
    default_model: str


class Example(BaseModel):
    question: str


DOCUMENTED = (SingleRequest, BatchRequest, SingleAnswer, BatchAnswer, Explanation, Error, Models, Example)


class RequestError(Exception):
    """A request body that breaks the schema: an error code of ERROR_CODES and a message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def parse_question_request(body, backends, default_model: str, max_batch: int, batch_allowed: bool = True):
    """(questions, model, is_batch) from a parsed JSON body, or RequestError / QuestionError: the schema
    says where a body is wrong, the tokenizer what is wrong with a question (as when it is answered)."""
    if not isinstance(body, dict):
        raise RequestError("invalid_request", f"request body must be a JSON object, got {type(body).__name__}")
    fields = [*SingleRequest.model_fields, *(BatchRequest.model_fields if batch_allowed else ())]
    fields = list(dict.fromkeys(fields))
    unknown = sorted(key for key in body if key not in fields)
    if unknown:
        raise RequestError("unknown_field", f"unknown field(s) {', '.join(map(repr, unknown))}; "
                                            f"a request has {', '.join(map(repr, fields))}")
    if "model" in body and (not isinstance(body["model"], str) or body["model"] not in backends):
        raise RequestError("unknown_model", f"model must be one of: {', '.join(backends)}")
    if ("question" in body) == ("questions" in body):
        raise RequestError("invalid_request", 'give exactly one of "question" (a string) or "questions" (a list)')
    batch = "questions" in body
    try:
        request = (BatchRequest if batch else SingleRequest).model_validate(body)
    except ValidationError as err:
        raise question_error(err, body) from None
    if batch and len(request.questions) > max_batch:
        raise RequestError("too_many_questions", f"at most {max_batch} questions per request, got {len(request.questions)}")
    return (request.questions if batch else [request.question]), request.model or default_model, batch


def question_error(err: ValidationError, body: dict) -> Exception:
    """The first schema violation as the API names it."""
    loc = err.errors()[0]["loc"]
    if loc == ("questions",):
        return RequestError("invalid_request", '"questions" must be a non-empty list of strings')
    value, index = (body["question"], None) if loc[0] == "question" else (body["questions"][loc[1]], loc[1])
    try:
        Tokenizer().validate(value)
    except QuestionError as question:
        return QuestionError(question.code, question.message, index)
    return RequestError("invalid_request", str(err.errors()[0]["msg"]))
