"""``python -m serving.engine.native``: build the native decoding step now (``make install`` does, so that a missing
compiler shows at set-up rather than in a server's /model/info) and say whether this machine runs it. Exits 0
either way: without it, bfloat16 decodes in PyTorch."""

from serving.engine.native import NativeUnavailable, library

try:
    print(f"native decoding step: ready ({library()._name})")
except NativeUnavailable as exc:
    print(f"native decoding step: unavailable here, bfloat16 will decode in PyTorch: {exc}")
