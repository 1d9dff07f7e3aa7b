"""Pages: the room list, a room, and signup. Thin: reads through selectors, writes through services."""

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from chat import selectors
from chat.errors import NotFound


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


def signup(request: HttpRequest) -> HttpResponse:
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("/")
    return render(request, "registration/signup.html", {"form": form})
