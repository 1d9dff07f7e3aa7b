"""Downloads of attachments (contract §8): `/files/<id>/<name>` and `/files/<id>/thumb.webp`, checked
on every request (chat.services.attachments.attachment_for_download). Anyone who may not read the
file gets the same JSON 404, anonymous included. Files are streamed from storage in chunks read in
a worker thread, or handed to nginx with X-Accel-Redirect when CHAT_FILES_ACCEL_REDIRECT is set."""

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models.fields.files import FieldFile
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_safe

from chat.errors import NotFound
from chat.services.attachments import INLINE_TYPES, THUMBNAIL_NAME, attachment_for_download

CHUNK_BYTES = 256 * 1024
# Short: a browser keeps showing a cached file after staff removed it, for at most this long.
MAX_AGE_SECONDS = 300
# Even a file opened on its own (not as an <img>) runs nothing and loads nothing.
CONTENT_SECURITY_POLICY = "sandbox; default-src 'none'"


@require_safe
def download(request: HttpRequest, attachment_id: str, name: str = "") -> HttpResponse:
    """The file itself, under any name in the URL (the name is for people; the id decides)."""
    return _serve(request, attachment_id, thumbnail=False)


@require_safe
def thumbnail(request: HttpRequest, attachment_id: str) -> HttpResponse:
    return _serve(request, attachment_id, thumbnail=True)


def _serve(request: HttpRequest, attachment_id: str, *, thumbnail: bool) -> HttpResponse:
    try:
        attachment = attachment_for_download(user=request.user, attachment_id=attachment_id, thumbnail=thumbnail)
    except NotFound as exc:
        return JsonResponse({"error": {"code": exc.code, "detail": exc.detail}}, status=404)
    field = attachment.thumbnail if thumbnail else attachment.file
    content_type = "image/webp" if thumbnail else attachment.content_type
    name = THUMBNAIL_NAME if thumbnail else attachment.name
    prefix = settings.CHAT_FILES_ACCEL_REDIRECT
    if prefix:
        # nginx sends the file from its `internal` location; the headers below are kept.
        response = HttpResponse(b"")
        response["X-Accel-Redirect"] = prefix.rstrip("/") + "/" + field.name
    elif request.method == "HEAD":
        response = HttpResponse(b"")
    else:
        try:
            handle = field.storage.open(field.name, "rb")
        except FileNotFoundError:
            return JsonResponse({"error": {"code": "not_found", "detail": "No such file."}}, status=404)
        response = StreamingHttpResponse(_chunks(handle))
        response["Content-Length"] = str(_size(field, attachment.size, thumbnail))
    # Text is served as UTF-8: the upload was accepted as text/plain only when it decoded as UTF-8.
    response["Content-Type"] = content_type + ("; charset=utf-8" if content_type == "text/plain" else "")
    response["Content-Disposition"] = content_disposition_header(
        as_attachment=not (thumbnail or content_type in INLINE_TYPES), filename=name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response["Cache-Control"] = f"private, max-age={MAX_AGE_SECONDS}"
    return response


def _size(field: FieldFile, original_size: int, thumbnail: bool) -> int:
    return field.storage.size(field.name) if thumbnail else original_size


async def _chunks(handle) -> AsyncIterator[bytes]:
    """The file in chunks, each read in a worker thread: under ASGI Django would read a synchronous
    iterator whole into memory first, and a read must not hold the event loop."""
    read = sync_to_async(handle.read, thread_sensitive=False)
    try:
        while chunk := await read(CHUNK_BYTES):
            yield chunk
    finally:
        await sync_to_async(handle.close, thread_sensitive=False)()
