"""The HTTP JSON API (contract §3): thin views over selectors and services."""

import functools
import json
import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.http import require_http_methods

from chat import protocol, selectors
from chat.errors import SERVICE_UNAVAILABLE, ChatError
from chat.services import blocks
from chat.services.attachments import UploadLimited, attachment_object, attachment_upload
from chat.services.rooms import (
    dm_open,
    room_add_member,
    room_create,
    room_member_list,
    room_remove_member,
    room_update,
)
from chat.services.text import without_nul

logger = logging.getLogger(__name__)


def error_response(status: int, code: str, detail: str, retry_after: float | None = None) -> JsonResponse:
    """The contract's error body; with `retry_after` (s) also in it and as the Retry-After header."""
    error = {"code": code, "detail": detail}
    if retry_after is not None:
        error["retry_after"] = retry_after
    response = JsonResponse({"error": error}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(max(1, round(retry_after)))
    return response


def api_view(*methods: str):
    """Session auth with a JSON 401, allowed methods, ChatError -> the contract's error body, and a
    503 `unavailable` with Retry-After while Postgres or Redis does not answer (the session's read
    included), instead of the server error page."""

    def decorate(view):
        @require_http_methods(list(methods))
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args, **kwargs):
            try:
                if not request.user.is_authenticated:
                    return error_response(401, "not_authenticated", "Log in first.")
                if selectors.user_is_banned(request.user):
                    return error_response(403, "banned", "This account is banned from the chat.")
                return view(request, *args, **kwargs)
            except ChatError as exc:
                return error_response(exc.http_status, exc.code, exc.detail)
            except SERVICE_UNAVAILABLE as exc:
                logger.warning("%s %s not served: %s: %s", request.method, request.path, type(exc).__name__, exc)
                return error_response(503, protocol.ERROR_UNAVAILABLE,
                                      "The chat could not do this just now; try again in a moment.",
                                      retry_after=protocol.UNAVAILABLE_RETRY_AFTER)

        return wrapper

    return decorate


def json_body(request: HttpRequest) -> dict:
    try:
        data = json.loads(request.body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ChatError("The body is not valid JSON.", code="invalid") from None
    if not isinstance(data, dict):
        raise ChatError("The body must be a JSON object.", code="invalid")
    return data


def _int_param(request: HttpRequest, name: str, *, default=None, low=0, high=None):
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ChatError(f"'{name}' must be an integer.", code="invalid") from None
    if value < low or (high is not None and value > high):
        raise ChatError(f"'{name}' must be between {low} and {high}.", code="invalid")
    return value


@api_view("GET", "POST")
def rooms(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"rooms": selectors.rooms_for_user(request.user)})
    data = json_body(request)
    name, private, slug = data.get("name"), data.get("private", False), data.get("slug")
    if not isinstance(name, str) or not isinstance(private, bool) or not isinstance(slug, (str, type(None))):
        raise ChatError("Send {'name': str, 'private': bool} and optionally 'slug': str.", code="invalid")
    room = room_create(owner=request.user, name=name, private=private, slug=slug)
    return JsonResponse(selectors.room_object(room, 0), status=201)


@api_view("GET", "PATCH")
def room_detail(request: HttpRequest, slug: str) -> JsonResponse:
    if request.method == "GET":
        room = selectors.room_for_user(request.user, slug)
        return JsonResponse(selectors.room_object(room, selectors.room_max_seq(room.id)))
    data = json_body(request)
    name, archived = data.get("name"), data.get("archived")
    if not isinstance(name, (str, type(None))) or not isinstance(archived, (bool, type(None))):
        raise ChatError("Send 'name' (str) and/or 'archived' (bool).", code="invalid")
    room = room_update(actor=request.user, slug=slug, name=name, archived=archived)
    return JsonResponse(selectors.room_object(room, selectors.room_max_seq(room.id)))


@api_view("GET", "POST")
def room_members(request: HttpRequest, slug: str) -> JsonResponse:
    room = selectors.room_for_user(request.user, slug)
    if request.method == "GET":
        return JsonResponse({"members": room_member_list(room=room)})
    username = json_body(request).get("username")
    if not isinstance(username, str):
        raise ChatError("Send {'username': str}.", code="invalid")
    membership = room_add_member(actor=request.user, room=room, username=username)
    return JsonResponse({"room": room.slug, "username": membership.user.username, "role": membership.role},
                        status=201)


@api_view("DELETE")
def room_member(request: HttpRequest, slug: str, username: str) -> HttpResponse:
    room_remove_member(actor=request.user, slug=slug, username=username)
    return HttpResponse(status=204)


@api_view("GET")
def room_messages(request: HttpRequest, slug: str) -> JsonResponse:
    room = selectors.room_for_user(request.user, slug)
    after = _int_param(request, "after")
    before = _int_param(request, "before")
    limit = _int_param(request, "limit", default=50, low=1, high=200)
    messages, has_more = selectors.history_page(room, after=after, before=before, limit=limit)
    return JsonResponse({"messages": messages, "has_more": has_more})


@api_view("POST")
def room_attachments(request: HttpRequest, slug: str) -> JsonResponse:
    """Upload one file (multipart field `file`) into a room the user may read, for a message to claim."""
    room = selectors.room_for_user(request.user, slug)
    try:
        upload = request.FILES.get("file")
    except MultiPartParserError as exc:
        raise ChatError(f"The body is not a valid multipart form ({exc}).", code="invalid") from None
    if upload is None:
        # Django parses a multipart body only with a Content-Length: a chunked one reads as empty.
        length = "" if request.META.get("CONTENT_LENGTH") else " with a Content-Length (a chunked body is not read)"
        raise ChatError(f"Send the file as the multipart field 'file'{length}.", code="invalid")
    try:
        attachment = attachment_upload(user=request.user, room=room, upload=upload)
    except UploadLimited as exc:
        return error_response(exc.http_status, exc.code, exc.detail, retry_after=exc.retry_after)
    return JsonResponse(attachment_object(attachment), status=201)


@api_view("POST")
def dms(request: HttpRequest) -> JsonResponse:
    username = json_body(request).get("username")
    if not isinstance(username, str):
        raise ChatError("Send {'username': str}.", code="invalid")
    room, created = dm_open(actor=request.user, username=username)
    return JsonResponse(selectors.room_object(room, selectors.room_max_seq(room.id)), status=201 if created else 200)


@api_view("GET", "POST")
def blocks_view(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"blocks": blocks.blocks_list(user=request.user)})
    username = json_body(request).get("username")
    if not isinstance(username, str):
        raise ChatError("Send {'username': str}.", code="invalid")
    block, created = blocks.block_create(blocker=request.user, username=username)
    return JsonResponse({"username": block.blocked.username}, status=201 if created else 200)


@api_view("DELETE")
def block(request: HttpRequest, username: str) -> HttpResponse:
    blocks.block_delete(blocker=request.user, username=username)
    return HttpResponse(status=204)


@api_view("GET")
def search(request: HttpRequest) -> JsonResponse:
    query = without_nul(request.GET.get("q", "")).strip()
    if not query:
        raise ChatError("Send the words to look for as ?q=.", code="invalid")
    limit = _int_param(request, "limit", default=20, low=1, high=100)
    room = request.GET.get("room") or None
    return JsonResponse({"messages": selectors.messages_search(request.user, query=query[:200], room_slug=room,
                                                                limit=limit)})


@api_view("GET")
def mentions(request: HttpRequest) -> JsonResponse:
    limit = _int_param(request, "limit", default=50, low=1, high=100)
    return JsonResponse({"messages": selectors.mentions_for_user(request.user, limit=limit)})


def csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """CSRF refusals as the contract's JSON error (also for the API's unsafe methods)."""
    if request.path.startswith("/api/"):
        return error_response(403, "csrf_failed", f"CSRF check failed: {reason}. Send the X-CSRFToken header.")
    from django.views.csrf import csrf_failure as django_csrf_failure

    return django_csrf_failure(request, reason)

