"""The base models a team can fine-tune: records an operator registers (webapp.ops.base_models:
the admin or `manage.py model_register`), not a file in git. `make run` registers the
engine's built-in offline models (python -m workers.catalog)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class SourceKind(models.TextChoices):
    BUILTIN = "builtin", "Built into the engine"
    LOCAL = "local", "Hugging Face folder"
    GGUF = "gguf", "GGUF file"
    HUB = "hub", "Hugging Face hub id"


class BaseModel(models.Model):
    # What jobs, runs and the API name it by (the engine resolves it through the worker).
    name = models.SlugField(max_length=100, unique=True)
    label = models.CharField(max_length=200)
    kind = models.CharField(max_length=10, choices=SourceKind.choices)
    # The folder or .gguf file on the worker hosts, or the hub id; "" for built-ins.
    source = models.CharField(max_length=500, blank=True)
    # The public hub id exported adapters name as their base, where one is known.
    hub_id = models.CharField(max_length=200, blank=True)
    model_type = models.CharField(max_length=50)
    parameters = models.BigIntegerField()
    context_length = models.IntegerField()
    # What training memory follows besides the weights (the pre-flight estimate); 0: unknown.
    vocab_size = models.IntegerField(default=0)
    layers = models.IntegerField(default=0)
    hidden_size = models.IntegerField(default=0)
    # Blank: the tokenizer's own template.
    chat_template = models.TextField(blank=True)
    licence = models.TextField(help_text="The licence's text or URL.")
    description = models.TextField(blank=True)
    offered = models.BooleanField(default=True, help_text="Offered to teams in forms and /v1.")
    # Training tokens a second on an idle 2-core CPU: the estimate's fallback before any
    # run of this model has been measured on the workers.
    tokens_per_s_cpu = models.FloatField(null=True, blank=True)
    registered_at = models.DateTimeField(auto_now_add=True)
    registered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ("parameters", "name")

    def __str__(self) -> str:
        return self.label
