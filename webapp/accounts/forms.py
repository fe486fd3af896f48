from collections.abc import Callable
from typing import Any, TypeVar

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm, UserCreationForm
from django.http import HttpRequest

from webapp.accounts.throttle import login_failure_record, login_refusal, login_success_record


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=False, help_text="Optional; lets teams invite you by e-mail.")

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")

    def clean_email(self) -> str:
        email = self.cleaned_data.get("email", "").strip()
        if email and get_user_model().objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("An account with this e-mail already exists.")
        return email


T = TypeVar("T")


def throttled_password_check(
    *, username: str, request: HttpRequest | None, check: Callable[[], T], failure_code: str
) -> T:
    """Run a form's password check under the log-in throttle (accounts.throttle): refused
    outright once the account or address is locked; a wrong password (a ValidationError
    with `failure_code`) counts as a failed log-in, a right one clears the account's count."""
    refusal = login_refusal(username=username, request=request)
    if refusal is not None:
        raise forms.ValidationError(refusal, code="throttled")
    try:
        result = check()
    except forms.ValidationError as exc:
        if exc.code == failure_code:
            login_failure_record(username=username, request=request)
        raise
    login_success_record(username=username, request=request)
    return result


class ThrottledAuthenticationForm(AuthenticationForm):
    """Django's log-in form, refused outright after too many failures (accounts.throttle)."""

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        if not username or not self.cleaned_data.get("password"):
            return super().clean()
        return throttled_password_check(
            username=username,
            request=self.request,
            check=super().clean,
            failure_code="invalid_login",
        )


class ThrottledPasswordChangeForm(PasswordChangeForm):
    """Django's password change; its old-password check counts with the log-ins, so a
    stolen session cannot guess the password here instead of at the log-in form."""

    def __init__(self, user: Any, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        return throttled_password_check(
            username=self.user.get_username(),
            request=self.request,
            check=super().clean_old_password,
            failure_code="password_incorrect",
        )
