"""Pages: the room list, a room, login and signup (both throttled). Thin: reads through selectors,
writes through services."""

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from chat import selectors
from chat.errors import NotFound
from chat.forms import LoginForm, SignupForm
from chat.services import accounts


@login_required
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/home.html", {"rooms": selectors.rooms_for_user(request.user)})


@login_required
def room(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        room = selectors.room_for_user(request.user, slug)
    except NotFound:
        raise Http404(f"No room '{slug}'.") from None
    return render(
        request,
        "chat/room.html",
        {
            "room": room,
            "is_owner": request.user.is_staff or room.owner_id == request.user.id,
            "client_config": {
                "room": room.slug,
                "username": request.user.username,
                "userId": request.user.id,
                "isStaff": request.user.is_staff,
                "maxLength": settings.CHAT_MAX_MESSAGE_LENGTH,
                "readSeq": selectors.read_seq(request.user.id, room.id),
                "direct": bool(room.direct_key),
            },
        },
    )


class LoginView(auth_views.LoginView):
    authentication_form = LoginForm

    def form_invalid(self, form: LoginForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.throttled_for:
            response.status_code = 429
        return response


def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and (wait := accounts.signup_attempt(address=accounts.client_address(request))):
        return render(request, "registration/signup.html",
                      {"form": SignupForm(initial={"username": request.POST.get("username", "")}),
                       "throttle_message": accounts.throttle_message(wait)}, status=429)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("/")
    return render(request, "registration/signup.html", {"form": form})
