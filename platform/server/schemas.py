"""Request bodies (pydantic, at the trust boundary). OpenAI's fields plus a few named extensions.

Every number the sampler reads is bounded here, and every string is `Text`: valid Unicode that encodes to
UTF-8 (JSON can carry a lone surrogate such as "\\ud800", which the tokenizer cannot encode). A value
outside its bounds is a 400 that names the field (see errors.py), never a failure deeper down.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ember.model.sampling_params import SamplingParams

MAX_TOKENS = 1 << 20  # a static bound; the route also refuses more than the model's context window
MAX_STOP = 16  # stop strings per request
MAX_SEED = (1 << 63) - 1


def _unicode(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"invalid Unicode: lone surrogate {value[e.start]!r} at character {e.start}") from None
    return value


Text = Annotated[str, AfterValidator(_unicode)]
Name = Annotated[Text, Field(max_length=256)]  # model names, collection names, ids, titles


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContentPart(Strict):
    type: Literal["text"]
    text: Text


class FunctionCall(Strict):
    name: Name
    arguments: Annotated[Text, Field(max_length=1 << 20)]  # JSON text, as the model wrote it


class ToolCall(Strict):
    id: Name
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Strict):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Text | list[ContentPart] | None = None
    name: Name | None = None
    tool_calls: Annotated[list[ToolCall], Field(max_length=128)] | None = None  # assistant turns that called tools
    tool_call_id: Name | None = None  # tool turns: the call this answers
    refusal: Text | None = None  # what clients echo back of an assistant turn

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class StreamOptions(Strict):
    include_usage: bool = False


class Sampling(Strict):
    """The sampling fields both completion endpoints share (vLLM's extensions included)."""

    model: Name
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    # omitted: OpenAI's 1.0, but greedy (0) for an answer from a collection (RAG answers stay faithful)
    temperature: float | None = Field(None, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    top_k: int = Field(0, ge=0, le=1 << 20)
    min_p: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    repetition_penalty: float = Field(1.0, ge=0.01, le=100, allow_inf_nan=False)
    presence_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    frequency_penalty: float = Field(0.0, ge=-2, le=2, allow_inf_nan=False)
    stop: Annotated[Text, Field(min_length=1, max_length=256)] | Annotated[
        list[Annotated[Text, Field(min_length=1, max_length=256)]], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(None, ge=-MAX_SEED - 1, le=MAX_SEED)
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens even past the end-of-sequence token
    # vLLM's token-id extensions, which Ember's own OpenAIBackend sends: accepted, no ids returned yet
    return_token_ids: bool = False
    return_tokens_as_token_ids: bool = False
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    user: Name | None = None

    def params(self, default_max_tokens: int, default_temperature: float = 1.0) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        temperature = default_temperature if self.temperature is None else self.temperature
        return SamplingParams(max_tokens=self.max_tokens or default_max_tokens, temperature=temperature,
                              top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                              repetition_penalty=self.repetition_penalty, presence_penalty=self.presence_penalty,
                              frequency_penalty=self.frequency_penalty, stop=stop, seed=self.seed,
                              ignore_eos=self.ignore_eos)


class FunctionDef(Strict):
    name: Name
    description: Annotated[Text, Field(max_length=1 << 16)] | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema, checked by ember.model.tool_calls
    strict: bool | None = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: Name


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(Strict):
    name: Name = "response"
    description: Text | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS)
    collection: Name | None = Field(None, description="Ember: answer from this collection (like ember-rag:NAME)")
    session_id: Name | None = Field(None, description="Ember: continue this stored chat session and save the turn")


class CompletionRequest(Sampling):
    prompt: Text | list[Text]
    max_tokens: int | None = Field(16, ge=1, le=MAX_TOKENS)
    echo: bool = False


class EmbeddingRequest(Strict):
    model: Name
    input: Text | Annotated[list[Text], Field(max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    user: Name | None = None
    dimensions: int | None = None


class CollectionCreate(Strict):
    name: Name


class GrantRequest(Strict):
    access: Literal["read", "write"] = "read"


class SearchRequest(Strict):
    query: Text = Field(min_length=1)
    k: int | None = Field(None, ge=1, le=100)
    mode: Literal["dense", "bm25", "hybrid"] | None = None


class SessionCreate(Strict):
    title: Name = "New chat"
    collection: Name | None = None


def usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
