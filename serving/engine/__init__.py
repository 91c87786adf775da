"""The decoding engine: everything between a prompt's token ids and its answer, with no HTTP in it (no FastAPI,
no pydantic: tests/test_layering.py). The HTTP side (``serving.http``) imports this package alone, never a module
inside it: ``Engine`` (load, then ``sequence``/``constrain``, ``submit`` the whole answer, ``enqueue``/``stream``
token ids as they come, ``decode``, ``describe`` for /model/info), its options, and the errors a request can meet.

- ``engine``: ``Engine``, a model URI loaded into a warmed-up batch behind a batcher;

- ``scheduler``: ``Batcher``, the bounded queue and the one generation thread; ``Sequence``, a request's row;
- ``decoding``: ``DecodeBatch``, the continuous batch (admit, drop, step, shared prefixes);
- ``prompts``: ``PromptCache``, the KV caches of shared prefixes and recent prompts, reused by prompts that start alike;
- ``sampling``: each row's next token (penalty, greedy or sampled, non-finite rows failed alone);
- ``structured``: response_format enforced per row while decoding (llguidance);
- ``kvcache``, ``kernels``, ``graphs``: the KV cache, what makes a step fast per device, CUDA graphs;
- ``prompting``: prompts in the model's format, input limits, streamed text;
- ``loader``: ``models:/``, ``runs:/`` (through MLflow, imported only there) or a folder -> the model and settings;
- ``agreement``: bfloat16 answers against float32.
"""

from serving.engine.engine import Engine, EngineOptions
from serving.engine.prompting import PromptTooLong
from serving.engine.scheduler import Batcher, GenerationFailed, Overloaded, Sequence, ShuttingDown
from serving.engine.structured import Unenforceable, requested_schema

__all__ = [
    "Batcher",
    "Engine",
    "EngineOptions",
    "GenerationFailed",
    "Overloaded",
    "PromptTooLong",
    "Sequence",
    "ShuttingDown",
    "Unenforceable",
    "requested_schema",
]
