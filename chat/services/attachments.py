"""Attachments (contract §8): upload (size, per-user limits, the type sniffed from the content, images
checked and thumbnailed), the attachment object, a message's claim on its uploads, staff removal,
and who may download one. Files go through Django's storage API, never under the user's name."""

import codecs
import io
import logging
import unicodedata
import uuid
import zipfile
from datetime import timedelta
from urllib.parse import quote

import filetype
from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone
from PIL import Image

from chat import permissions, selectors
from chat.errors import ChatError, Forbidden, NotFound
from chat.models import Attachment, Message, ModerationAction, Room
from chat.services import blocks
from chat.services.events import after_commit
from chat.services.limits import rate_take
from chat.services.rooms import RoomGate

logger = logging.getLogger(__name__)

ORIGINAL_NAME = "original"  # the stored file's name: never the user's
THUMBNAIL_NAME = "thumb.webp"  # also the last part of the thumbnail's URL
THUMBNAIL_BOX = (480, 480)
# Decoding costs memory by pixels, not bytes: a small file may unpack to gigabytes.
MAX_IMAGE_PIXELS = 50_000_000
SNIFF_BYTES = 8192  # what filetype reads of a file's head
TEXT_CHUNK = 1024 * 1024
PENDING_WINDOW = timedelta(hours=24)
# The format Pillow must find in a file whose signature says it is this image type.
IMAGE_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
INLINE_TYPES = frozenset(IMAGE_FORMATS)  # shown in the browser; anything else is downloaded
OFFICE_ZIP_TYPES = {
    "word/": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xl/": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "ppt/": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}
OPEN_DOCUMENT_TYPES = frozenset({
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.presentation",
})
# How text that a browser would take for markup starts (after whitespace and a BOM): such text is
# refused as what it is, never accepted as text/plain.
MARKUP_STARTS = {"<svg": "image/svg+xml", "<?xml": "application/xml"}
HTML_TAGS = ("!doctype html", "html", "head", "body", "script", "iframe", "style", "title", "div", "table",
             "font", "br", "p", "a", "b", "h1", "!--", "meta", "object", "embed", "img", "form")
ORIENTATION_TAG = 0x0112
TRANSPOSE_FOR_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class UploadTooLarge(ChatError):
    code = "too_large"
    http_status = 413


class UnsupportedType(ChatError):
    code = "unsupported_type"
    http_status = 415


class UploadLimited(ChatError):
    """Past the upload rate (`rate_limited`, with retry_after) or the cap on unsent uploads."""

    code = "too_many_uploads"
    http_status = 429


def attachment_name_clean(name: str) -> str:
    """The name shown and offered on download: no path, no control or format characters (a
    right-to-left override could make "gpj.exe" read as "exe.jpg"), at most 255 characters."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(" " if unicodedata.category(ch)[0] == "Z" else ch for ch in name
                   if unicodedata.category(ch)[0] != "C").strip()
    if name in ("", ".", ".."):
        return "file"
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = f"{stem[:254 - len(ext)]}.{ext}" if dot and stem and len(ext) <= 16 else name[:255]
    if name.lower() == THUMBNAIL_NAME:  # its URL would be the thumbnail's
        return "image.webp"
    return name


def _zip_type(upload: UploadedFile, claimed: str) -> str:
    """A zip-based file's type from its entries (filetype reads only the head, where an office
    document's telling entries may not be); a zip Python cannot read is no zip."""
    try:
        upload.seek(0)
        with zipfile.ZipFile(upload) as archive:
            names = archive.namelist()
            if "mimetype" in names and archive.getinfo("mimetype").file_size < 128:
                declared = archive.read("mimetype").decode("ascii", "replace").strip()
                if declared in OPEN_DOCUMENT_TYPES:
                    return declared
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        return "application/octet-stream"
    if "[Content_Types].xml" in names:
        for prefix, office_type in OFFICE_ZIP_TYPES.items():
            if any(n.startswith(prefix) for n in names):
                return office_type
    # An office type filetype guessed but the entries do not bear out is a plain zip.
    return "application/zip" if claimed in OPEN_DOCUMENT_TYPES or "officedocument" in claimed else claimed


def _text_type(upload: UploadedFile) -> str | None:
    """text/plain for UTF-8 without NUL bytes (or the markup type it would be taken for), else None."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    upload.seek(0)
    head = ""
    try:
        while chunk := upload.read(TEXT_CHUNK):
            if b"\x00" in chunk:
                return None
            text = decoder.decode(chunk)
            if len(head) < 1024:
                head += text[:1024]
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return None
    start = head.lstrip("\ufeff \t\r\n\f").lower()
    for prefix, markup_type in MARKUP_STARTS.items():
        if start.startswith(prefix):
            return "image/svg+xml" if "<svg" in start else markup_type
    for tag in HTML_TAGS:
        if start.startswith("<" + tag) and start[len(tag) + 1:len(tag) + 2] in (" ", ">", "\t", "\n", "/", "\r"):
            return "text/html"
    return "text/plain"


def sniff_type(upload: UploadedFile) -> str:
    """The file's MIME type as its content shows it (never its name)."""
    upload.seek(0)
    kind = filetype.guess(upload.read(SNIFF_BYTES))
    if kind is not None:
        if kind.mime == "application/zip" or kind.mime in OPEN_DOCUMENT_TYPES or "officedocument" in kind.mime:
            return _zip_type(upload, kind.mime)
        return kind.mime
    return _text_type(upload) or "application/octet-stream"


def _image_check(upload: UploadedFile, content_type: str) -> tuple[int, int, bytes]:
    """Width and height (as displayed) and a WebP thumbnail, or UnsupportedType for an image that
    is not what its signature says, too many pixels, or undecodable."""
    try:
        upload.seek(0)
        with Image.open(upload) as image:
            expected = IMAGE_FORMATS.get(content_type)
            if expected is not None and image.format != expected:
                raise UnsupportedType(f"The file claims to be {content_type} but does not decode as one.")
            width, height = image.size
            # From the header, before anything is decoded: Pillow's own guard refuses only at
            # twice its Image.MAX_IMAGE_PIXELS (about 179 million pixels), and merely warns below.
            if width * height > MAX_IMAGE_PIXELS:
                raise UnsupportedType(f"The image has {width}x{height} pixels; at most "
                                      f"{MAX_IMAGE_PIXELS // 1_000_000} million are accepted.")
            image.verify()  # the structure, all frames; the image is unusable after it
        upload.seek(0)
        with Image.open(upload) as image:  # the first frame of an animation
            orientation = image.getexif().get(ORIENTATION_TAG)
            mode = "RGBA" if _has_alpha(image) else "RGB"
            image.draft("RGB", THUMBNAIL_BOX)  # JPEG: decode at a reduced scale
            # Palette and bilevel images would be resized by nearest pixel: convert them first;
            # others are reduced first, so a large image is never copied at full size.
            source = image.convert(mode) if image.mode in ("1", "P") else image
            source.thumbnail(THUMBNAIL_BOX)
            thumb = source.convert(mode)
    except Image.DecompressionBombError:
        raise UnsupportedType("The image has too many pixels to be decoded safely.") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.UnidentifiedImageError) as exc:
        raise UnsupportedType(f"The image could not be decoded ({exc}).") from None
    if orientation in TRANSPOSE_FOR_ORIENTATION:
        thumb = thumb.transpose(TRANSPOSE_FOR_ORIENTATION[orientation])
        if orientation >= 5:  # rotated a quarter turn: displayed the other way round
            width, height = height, width
    out = io.BytesIO()
    thumb.save(out, "WEBP", quality=80)
    return width, height, out.getvalue()


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _upload_allowed(*, user, room: Room) -> None:
    """Refusals before any work: muted, a read-only room, the rate, too many unsent uploads."""
    profile = getattr(user, "chat_profile", None)
    if profile is not None and permissions.is_muted(profile.muted_until):
        raise Forbidden("You are muted in this chat for now.", code="muted")
    RoomGate(archived=room.archived,
             blocked=bool(room.direct_key) and blocks.dm_blocked(user_id=user.id, direct_key=room.direct_key)).check()
    try:
        async_to_sync(rate_take)(user_id=user.id, kind="upload")
    except ChatError as exc:
        raise UploadLimited(exc.detail, code=exc.code, retry_after=exc.retry_after) from None
    cap = settings.CHAT_MAX_PENDING_UPLOADS
    pending = Attachment.objects.filter(uploader=user, message_id__isnull=True, removed=False,
                                        created_at__gte=timezone.now() - PENDING_WINDOW).count()
    if pending >= cap:
        raise UploadLimited(f"You have {pending} uploads from the last 24 hours not sent in a message yet; the "
                            f"limit is {cap}. Send them first.")


def attachment_upload(*, user, room: Room, upload: UploadedFile) -> Attachment:
    """Check and store one upload into `room` (which `user` may read) for a message of theirs to claim."""
    limit = settings.CHAT_MAX_UPLOAD_BYTES
    if upload.size > limit:
        raise UploadTooLarge(f"The file has {upload.size} bytes; the limit is {limit}.")
    if upload.size == 0:
        raise ChatError("The file is empty.", code="invalid")
    _upload_allowed(user=user, room=room)
    content_type = sniff_type(upload)
    if content_type not in settings.CHAT_UPLOAD_TYPES:
        raise UnsupportedType(f"Files of type {content_type} (as read from the content, not the name) are not "
                              "accepted here.")
    attachment = Attachment(room=room, uploader=user, name=attachment_name_clean(upload.name or ""),
                            size=upload.size, content_type=content_type)
    thumbnail = None
    if content_type.startswith("image/"):
        attachment.width, attachment.height, thumbnail = _image_check(upload, content_type)
    upload.seek(0)
    try:  # the row last: a failure at any step leaves neither files nor row behind
        attachment.file.save(ORIGINAL_NAME, upload, save=False)
        if thumbnail is not None:
            attachment.thumbnail.save(THUMBNAIL_NAME, ContentFile(thumbnail), save=False)
        attachment.save(force_insert=True)
    except BaseException:
        _files_delete(attachment)
        raise
    return attachment


def _files_delete(attachment: Attachment) -> None:
    for field in (attachment.file, attachment.thumbnail):
        if field.name:
            try:
                field.storage.delete(field.name)
            except Exception:  # the caller's error matters more; this one is logged
                logger.exception("could not delete %s of attachment %s", field.name, attachment.pk)


def attachment_object(attachment: Attachment) -> dict:
    """The attachment object of contract §8."""
    return {
        "id": str(attachment.pk),
        "name": attachment.name,
        "size": attachment.size,
        "content_type": attachment.content_type,
        "url": f"/files/{attachment.pk}/{quote(attachment.name, safe='')}",
        "thumbnail_url": f"/files/{attachment.pk}/{THUMBNAIL_NAME}" if attachment.thumbnail else None,
    }


def attachments_claim(*, user_id: int, room_id: int, ids: list[str], message_id: str, client_id: str) -> list[dict]:
    """Claim the user's own unsent uploads of this room for a message, in one UPDATE, and return their
    objects in the order of `ids`. Ids a retry of the same client_id claimed already count as claimed."""
    if not ids:
        return []
    try:
        wanted = [uuid.UUID(str(i)) for i in ids]
        message_uuid = uuid.UUID(str(message_id))
    except ValueError:
        raise ChatError("An attachment id is not a valid id.", code="invalid_attachment") from None
    if len(set(wanted)) != len(wanted):
        raise ChatError("An attachment is listed twice.", code="invalid_attachment")
    mine = Attachment.objects.filter(pk__in=wanted, uploader_id=user_id, room_id=room_id, removed=False)
    with transaction.atomic():  # a refusal leaves no id claimed
        mine.filter(message_id__isnull=True).update(message_id=message_uuid, client_id=client_id)
        found = {a.pk: a for a in mine}
        for pk in wanted:
            a = found.get(pk)
            if a is None or not (a.message_id == message_uuid or a.client_id == client_id):
                raise ChatError(f"Attachment {pk} is not an unsent upload of yours in this room.",
                                code="invalid_attachment")
    return [attachment_object(found[pk]) for pk in wanted]


def attachment_remove(*, actor, attachment: Attachment, reason: str = "") -> None:
    """Staff remove an attachment: its files are deleted, the removal is in the moderation log, and
    the message that carries it (if any) loses it live on every client."""
    with transaction.atomic():
        if not Attachment.objects.filter(pk=attachment.pk, removed=False).update(removed=True):
            return  # removed already
        message = Message.objects.filter(pk=attachment.message_id).first() if attachment.message_id else None
        ModerationAction.objects.create(actor=actor, action="remove_attachment", target_user_id=attachment.uploader_id,
                                        target_message=message,
                                        reason=reason or f"attachment {attachment.pk} ({attachment.name})")
        # After the commit: a rolled-back removal must not have lost the files.
        transaction.on_commit(lambda: _files_delete(attachment))
        if attachment.message_id:
            from chat.services.messages import message_attachment_removed

            after_commit(message_attachment_removed, room_id=attachment.room_id, message_id=str(attachment.message_id),
                         attachment_id=str(attachment.pk))
    attachment.removed = True


def attachment_for_download(*, user, attachment_id: str, thumbnail: bool) -> Attachment:
    """The attachment if `user` may read it now, else NotFound (which never says why). Readers of the
    room may read a sent one while its message is visible (or not stored yet); an unsent one only
    its uploader. Staff get no more than anyone."""
    missing = NotFound("No such file.")
    if not user.is_authenticated:
        raise missing
    try:
        pk = uuid.UUID(str(attachment_id))
    except ValueError:
        raise missing from None
    attachment = Attachment.objects.filter(pk=pk, removed=False,
                                           room__in=permissions.readable_rooms(user).values("pk")).first()
    if attachment is None or (thumbnail and not attachment.thumbnail) or selectors.user_is_banned(user):
        raise missing
    if attachment.message_id is None:
        if attachment.uploader_id != user.id:
            raise missing
    elif Message.objects.filter(pk=attachment.message_id).exclude(hidden=False, deleted=False).exists():
        raise missing
    return attachment
