"""The operators' admin for base models: adding one registers it (reading its files on the
web host, as `manage.py model_register` does on a worker host); deleting one is refused
while a job uses it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import redirect

from webapp.core.catalog import context_text, size_text
from webapp.core.models import BaseModel
from webapp.ops.base_models import base_model_register, base_model_unregister, registration

FACTS = ("kind", "source", "model_type", "parameters", "context_length", "registered_at")


class RegisterForm(forms.ModelForm):
    """The add form: where the model is; the facts are read from it on save."""

    source = forms.CharField(
        max_length=500, help_text="A Hugging Face folder, a .gguf file, or an owner/name hub id"
    )
    licence = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        help_text="Its text or URL; blank: the folder's LICENSE file",
    )

    class Meta:
        model = BaseModel
        fields = ("source", "name", "label", "licence", "hub_id", "chat_template", "offered")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in ("name", "label"):
            self.fields[field].required = False

    def _post_clean(self) -> None:
        """Check the registration here, so a model that cannot be read is a form error."""
        if self.errors:
            return
        try:
            registration(**registration_fields(self.cleaned_data))
        except ValidationError as exc:
            self.add_error("source", exc)


def registration_fields(data: dict[str, Any]) -> dict[str, Any]:
    fields = {k: data.get(k) or "" for k in RegisterForm.Meta.fields}
    return fields | {"offered": bool(data.get("offered"))}


@admin.register(BaseModel)
class BaseModelAdmin(admin.ModelAdmin):
    list_display = ("name", "label", "kind", "size", "context", "offered", "registered_at")
    list_filter = ("offered", "kind", "model_type")
    search_fields = ("name", "label", "source", "hub_id")

    @admin.display(description="size")
    def size(self, model: BaseModel) -> str:
        return size_text(model.parameters)

    @admin.display(description="context")
    def context(self, model: BaseModel) -> str:
        return context_text(model.context_length)

    def get_form(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = RegisterForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return RegisterForm.Meta.fields
        editable = ("label", "offered", "licence", "chat_template", "hub_id", "tokens_per_s_cpu")
        return ("name", *FACTS, *editable, "description")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ("name", *FACTS, "description") if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: BaseModel, form: Any, change: bool) -> None:
        if change:
            return super().save_model(request, obj, form, change)
        saved = base_model_register(**registration_fields(form.cleaned_data), by=request.user)
        for field in BaseModel._meta.concrete_fields:  # the admin's log and redirect read obj
            setattr(obj, field.attname, getattr(saved, field.attname))

    def delete_model(self, request: HttpRequest, obj: BaseModel) -> None:
        base_model_unregister(model=obj)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: Any = None) -> Any:
        try:
            return super().delete_view(request, object_id, extra_context)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return redirect("admin:core_basemodel_change", object_id)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[BaseModel]) -> None:
        for model in queryset:
            try:
                base_model_unregister(model=model)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
