from typing import Any

from django.contrib.auth import login
from django.contrib.auth.views import PasswordChangeView
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from webapp.accounts.forms import SignupForm, ThrottledPasswordChangeForm
from webapp.accounts.services import user_signup
from webapp.core.redirects import redirect_to_next


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("dashboard")
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = user_signup(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
        )
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect_to_next(request, request.GET.get("next"), "dashboard")
    return render(request, "accounts/signup.html", {"form": form})


class ThrottledPasswordChangeView(PasswordChangeView):
    """Django's password change with the log-in throttle on its old-password check."""

    form_class = ThrottledPasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        # The throttle counts per address too: the form needs the request.
        return {**super().get_form_kwargs(), "request": self.request}
