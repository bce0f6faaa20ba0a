"""streamguard: find model-distillation campaigns in an LLM API's request stream."""

__version__ = "0.1.0"
