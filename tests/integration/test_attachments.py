"""Attachments (contract §8) through a real daphne instance: uploads checked by content, images
thumbnailed, downloads only for who may read them, the size limit before the body is read, claims
by messages, and removal by staff."""

import io
import re
import secrets
import uuid
import zipfile
from pathlib import Path

import httpx
import pytest
from django.test import override_settings
from PIL import Image

from chat.models import Attachment, Message, ModerationAction, Report, Room
from chat.services import moderation
from chat.services.attachments import attachment_remove, attachments_claim
from tests.conftest import RUN, child_env, make_room, make_user, session_cookie
from tests.support import WebServer

MAX_BYTES = 2 * 1024 * 1024  # small, so over-the-limit uploads stay quick
PENDING = 4


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def web(media):
    """A web instance of this module's own: its own MEDIA_ROOT, a small size limit, few unsent uploads."""
    server = WebServer(f"web-files-{RUN}", child_env(MEDIA_ROOT=str(media), CHAT_MAX_UPLOAD_BYTES=str(MAX_BYTES),
                                                     CHAT_MAX_PENDING_UPLOADS=str(PENDING),
                                                     CHAT_UPLOAD_RATE_LIMIT="6/60s")).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def same_storage(media):
    """This process (claims, removals) sees the instance's files."""
    with override_settings(MEDIA_ROOT=str(media), CHAT_MAX_UPLOAD_BYTES=MAX_BYTES):
        yield


def client_for(server, user=None) -> httpx.Client:
    client = httpx.Client(base_url=server.url, timeout=30)
    if user is not None:
        client.cookies.set("sessionid", session_cookie(user))
        client.cookies.set("csrftoken", secrets.token_hex(16))
    return client


def upload(client: httpx.Client, slug: str, name: str, data: bytes, content_type: str = "image/png") -> httpx.Response:
    return client.post(f"/api/rooms/{slug}/attachments/", files={"file": (name, data, content_type)},
                       headers={"X-CSRFToken": client.cookies.get("csrftoken", ""), "Referer": str(client.base_url)})


def png(width: int = 1200, height: int = 800) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def stored_files(media: Path) -> set[Path]:
    return {p for p in media.rglob("*") if p.is_file()}


def claim(user, room, ids: list[str], client_id: str | None = None) -> list[dict]:
    return attachments_claim(user_id=user.id, room_id=room.id, ids=ids, message_id=str(uuid.uuid4()),
                             client_id=client_id or uuid.uuid4().hex)


def test_png_upload_is_thumbnailed_and_served_to_readers(web, media):
    alice, bob = make_user("alice"), make_user("bob")
    room = make_room(alice)
    data = png()
    with client_for(web, alice) as c:
        created = upload(c, room.slug, "../holiday\u202e.png", data, "application/octet-stream")
        assert created.status_code == 201, created.text
        body = created.json()
        assert set(body) == {"id", "name", "size", "content_type", "url", "thumbnail_url"}
        assert body["name"] == "holiday.png" and body["size"] == len(data) and body["content_type"] == "image/png"
        assert body["url"] == f"/files/{body['id']}/holiday.png"
        assert body["thumbnail_url"] == f"/files/{body['id']}/thumb.webp"
        row = Attachment.objects.get(pk=body["id"])
        assert (row.width, row.height) == (1200, 800) and row.message_id is None
        assert row.file.name.endswith(f"{body['id']}/original")
        with Image.open(media / row.thumbnail.name) as thumb:
            assert thumb.format == "WEBP" and thumb.size == (480, 320)
        own = c.get(body["url"])  # the uploader sees it before it is sent
        assert own.status_code == 200 and own.content == data
    with client_for(web, bob) as c:
        assert c.get(body["url"]).status_code == 404  # not sent yet: the uploader's only
    claim(alice, room, [body["id"]])  # sent: its message not stored yet is readable by the room's readers
    with client_for(web, bob) as c:
        got = c.get(body["url"])
        assert got.status_code == 200 and got.content == data
        assert got.headers["content-type"] == "image/png"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-disposition"].startswith("inline")
        assert "filename*=UTF-8''holiday.png" in got.headers["content-disposition"] or \
            'filename="holiday.png"' in got.headers["content-disposition"]
        assert got.headers["content-security-policy"] == "sandbox; default-src 'none'"
        assert got.headers["cache-control"].startswith("private")
        thumb = c.get(body["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        assert thumb.content[:4] == b"RIFF" and thumb.content[8:12] == b"WEBP"


def test_a_private_rooms_file_is_404_to_outsiders_and_anonymous(web):
    owner, outsider = make_user("owner"), make_user("outsider")
    staff = make_user("staff", is_staff=True, is_superuser=True)
    room = make_room(owner, private=True)
    with client_for(web, owner) as c:
        body = upload(c, room.slug, "plan.png", png(40, 40)).json()
    claim(owner, room, [body["id"]])
    for user in (outsider, staff, None):  # staff get no more than anyone (contract §9)
        with client_for(web, user) as c:
            for url in (body["url"], body["thumbnail_url"]):
                got = c.get(url, follow_redirects=False)
                assert got.status_code == 404, (user, url)
                assert got.json()["error"]["code"] == "not_found"
    with client_for(web, outsider) as c:
        assert upload(c, room.slug, "x.png", png(10, 10)).status_code == 404
        assert c.get(f"/files/{uuid.uuid4()}/x.png").status_code == 404
        assert c.get("/files/not-an-id/x.png").status_code == 404


def test_oversized_uploads_are_refused_and_leave_nothing(web, media):
    alice = make_user("alice")
    room = make_room(alice)
    before = stored_files(media)
    with client_for(web, alice) as c:
        # Far over: the middleware answers from Content-Length before Django reads the body.
        huge = upload(c, room.slug, "big.bin", b"\0" * (MAX_BYTES + 200 * 1024), "application/octet-stream")
        assert huge.status_code == 413 and huge.json()["error"]["code"] == "too_large"
        # Just over (inside the multipart allowance): the view's exact check.
        just = upload(c, room.slug, "big.png", png(10, 10) + b"\0" * MAX_BYTES)
        assert just.status_code == 413 and just.json()["error"]["code"] == "too_large"

        def chunks():  # no Content-Length: counted as it arrives
            yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"c.bin\"\r\n\r\n"
            for _ in range(MAX_BYTES // 65536 + 4):
                yield b"\0" * 65536
            yield b"\r\n--b--\r\n"

        chunked = c.post(f"/api/rooms/{room.slug}/attachments/", content=chunks(),
                         headers={"Content-Type": "multipart/form-data; boundary=b",
                                  "X-CSRFToken": c.cookies.get("csrftoken", ""), "Referer": str(c.base_url)})
        assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "too_large"
    assert not Attachment.objects.filter(uploader=alice).exists()
    assert stored_files(media) == before


@pytest.mark.parametrize(("data", "named"), [
    (b"\x7fELF\x02\x01\x01\x00" + b"\0" * 120, "application/x-executable"),
    (b"MZ\x90\x00\x03" + b"\0" * 120, "application/x-msdownload"),
    (b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>", "text/html"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "image/png"),  # a PNG signature on no image
])
def test_disguised_files_are_refused_by_content(web, media, data, named):
    alice = make_user("alice")
    room = make_room(alice)
    before = stored_files(media)
    with client_for(web, alice) as c:
        refused = upload(c, room.slug, "photo.png", data)
    assert refused.status_code == 415, refused.text
    error = refused.json()["error"]
    assert error["code"] == "unsupported_type" and named in error["detail"]
    assert not Attachment.objects.filter(uploader=alice).exists() and stored_files(media) == before


def docx() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("_rels/.rels", "<Relationships/>")
        archive.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


def test_pdf_text_and_office_files_are_accepted_as_their_content_says(web):
    alice, bob = make_user("alice"), make_user("bob")
    room = make_room(alice)
    pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
    text = "Grüße, plain notes\nline two\n".encode()
    with client_for(web, alice) as c:
        as_pdf = upload(c, room.slug, "report.bin", pdf, "application/octet-stream").json()
        as_text = upload(c, room.slug, "notes.exe", text, "application/x-msdownload").json()
        as_docx = upload(c, room.slug, "minutes.zip", docx(), "application/zip").json()
    assert as_pdf["content_type"] == "application/pdf" and as_pdf["thumbnail_url"] is None
    assert as_text["content_type"] == "text/plain" and as_text["name"] == "notes.exe"
    assert as_docx["content_type"] == "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    claim(alice, room, [as_pdf["id"], as_text["id"]])
    with client_for(web, bob) as c:
        got = c.get(as_pdf["url"])
        assert got.headers["content-type"] == "application/pdf" and got.content == pdf
        assert got.headers["content-disposition"].startswith("attachment")
        got = c.get(as_text["url"])
        assert got.headers["content-type"] == "text/plain; charset=utf-8" and got.content == text
        assert got.headers["content-disposition"].startswith("attachment")


def test_claims_take_only_the_users_own_unsent_uploads(web):
    alice, bob = make_user("alice"), make_user("bob")
    room, other_room = make_room(alice), make_room(alice)
    with client_for(web, alice) as c:
        first, second = (upload(c, room.slug, f"{n}.png", png(20, 20)).json()["id"] for n in (1, 2))
        elsewhere = upload(c, other_room.slug, "3.png", png(20, 20)).json()["id"]
    from chat.errors import ChatError

    for user, ids in ((bob, [first]), (alice, [elsewhere]), (alice, ["not-an-id"]), (alice, [first, first])):
        with pytest.raises(ChatError) as refused:
            claim(user, room, ids)
        assert refused.value.code == "invalid_attachment"
    claimed = claim(alice, room, [second, first], client_id="send-1")
    assert [a["id"] for a in claimed] == [second, first]
    # A retry of the same send finds its own claim; another message cannot take them.
    assert [a["id"] for a in claim(alice, room, [first], client_id="send-1")] == [first]
    with pytest.raises(ChatError) as refused:
        claim(alice, room, [first], client_id="send-2")
    assert refused.value.code == "invalid_attachment"
    # A refused claim claims nothing, not even the ids it could have taken.
    with client_for(web, alice) as c:
        fresh = upload(c, room.slug, "4.png", png(20, 20)).json()["id"]
    with pytest.raises(ChatError):
        claim(alice, room, [fresh, first], client_id="send-3")
    assert Attachment.objects.get(pk=fresh).message_id is None


def test_removed_and_hidden_files_are_gone(web, media):
    alice, bob = make_user("alice"), make_user("bob")
    staff = make_user("staff", is_staff=True, is_superuser=True)
    room = make_room(alice)
    with client_for(web, alice) as c:
        removed, hidden = (upload(c, room.slug, f"{n}.png", png(30, 30)).json() for n in ("removed", "hidden"))
    row = Attachment.objects.get(pk=removed["id"])
    attachment_remove(actor=staff, attachment=row, reason="not for here")
    assert not (media / row.file.name).exists() and not (media / row.thumbnail.name).exists()
    assert ModerationAction.objects.filter(action="remove_attachment", target_user=alice,
                                           reason="not for here").exists()
    message_id = str(uuid.uuid4())
    attachments_claim(user_id=alice.id, room_id=room.id, ids=[hidden["id"]], message_id=message_id, client_id="h1")
    message = Message.objects.create(id=message_id, room=room, seq=1, author=alice, body="", client_id="h1")
    with client_for(web, bob) as c:
        assert c.get(hidden["url"]).status_code == 200
    moderation.message_hide(actor=staff, message=Message.objects.select_related("room", "author").get(pk=message.pk))
    for user in (alice, bob):
        with client_for(web, user) as c:
            assert c.get(removed["url"]).status_code == 404
            assert c.get(hidden["url"]).status_code == 404
            assert c.get(hidden["thumbnail_url"]).status_code == 404


def test_upload_refusals(web):
    alice, muted = make_user("alice"), make_user("muted")
    room = make_room(alice)
    with client_for(web) as anonymous:
        anonymous.cookies.set("csrftoken", secrets.token_hex(16))  # past CSRF, as any unsafe API call
        response = upload(anonymous, room.slug, "a.png", png(5, 5))
        assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"
    with client_for(web, alice) as c:
        response = c.post(f"/api/rooms/{room.slug}/attachments/", data={"x": "1"},
                          headers={"X-CSRFToken": c.cookies.get("csrftoken", ""), "Referer": str(c.base_url)})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"
        no_csrf = c.post(f"/api/rooms/{room.slug}/attachments/", files={"file": ("a.png", png(5, 5))})
        assert no_csrf.status_code == 403 and no_csrf.json()["error"]["code"] == "csrf_failed"
    staff = make_user("staff", is_staff=True, is_superuser=True)
    moderation.user_mute(actor=staff, user=muted)
    with client_for(web, muted) as c:
        response = upload(c, room.slug, "a.png", png(5, 5))
        assert response.status_code == 403 and response.json()["error"]["code"] == "muted"
    Room.objects.filter(pk=room.pk).update(archived=True)
    with client_for(web, alice) as c:
        response = upload(c, room.slug, "a.png", png(5, 5))
        assert response.status_code == 403 and response.json()["error"]["code"] == "room_archived"


def test_unsent_uploads_and_the_upload_rate_are_capped(web):
    alice = make_user("alice")
    room = make_room(alice)
    with client_for(web, alice) as c:
        codes = [upload(c, room.slug, f"{n}.png", png(5, 5)) for n in range(7)]
    assert [r.status_code for r in codes] == [201] * PENDING + [429] * (7 - PENDING)
    assert codes[PENDING].json()["error"]["code"] == "too_many_uploads"
    limited = codes[-1].json()["error"]  # the seventh within a minute: past 6/60s
    assert limited["code"] == "rate_limited" and limited["retry_after"] > 0
    assert int(codes[-1].headers["retry-after"]) >= 1
    assert re.fullmatch(r"\d+", codes[-1].headers["retry-after"])


def test_staff_see_and_remove_a_reported_messages_attachments_in_the_admin(web, media):
    alice, reporter = make_user("alice"), make_user("reporter")
    staff = make_user("staff", is_staff=True, is_superuser=True)
    room = make_room(alice)
    with client_for(web, alice) as c:
        body = upload(c, room.slug, "evidence.png", png(50, 50)).json()
    message_id = str(uuid.uuid4())
    attachments_claim(user_id=alice.id, room_id=room.id, ids=[body["id"]], message_id=message_id, client_id="r1")
    message = Message.objects.create(id=message_id, room=room, seq=1, author=alice, body="look", client_id="r1",
                                     attachments=[body], reactions=[{"emoji": "👍", "count": 1, "users": ["bob"]}])
    report = Report.objects.create(message=message, reporter=reporter, reason="spam")
    with httpx.Client(base_url=web.url, cookies={"sessionid": session_cookie(staff)}, timeout=30) as admin_client:
        listed = admin_client.get("/admin/chat/attachment/")
        assert listed.status_code == 200 and "evidence.png" in listed.text
        page = admin_client.get(f"/admin/chat/report/{report.pk}/change/")
        assert page.status_code == 200
        assert body["url"] in page.text and body["thumbnail_url"] in page.text and "👍" in page.text
        message_page = admin_client.get(f"/admin/chat/message/{message_id}/change/")
        assert message_page.status_code == 200 and "evidence.png" in message_page.text and "👍" in message_page.text
        remove = re.search(r'href="(/admin/chat/attachment/[^"]+/remove/[^"]*)"', page.text).group(1)
        remove = remove.replace("&amp;", "&")
        ask = admin_client.get(remove)
        assert ask.status_code == 200 and "evidence.png" in ask.text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', ask.text).group(1)
        done = admin_client.post(remove, data={"confirm": "yes", "reason": "not allowed here",
                                               "csrfmiddlewaretoken": token})
        assert done.status_code == 302 and done.headers["location"] == f"/admin/chat/report/{report.pk}/change/"
        assert admin_client.get("/admin/chat/desk/").status_code == 200
    row = Attachment.objects.get(pk=body["id"])
    assert row.removed and not (media / row.file.name).exists()
    assert ModerationAction.objects.filter(action="remove_attachment", target_message=message, actor=staff,
                                           reason="not allowed here").exists()
    with client_for(web, alice) as c:
        assert c.get(body["url"]).status_code == 404


def test_an_image_with_too_many_pixels_is_refused_before_it_is_decoded(web, media):
    alice = make_user("alice")
    room = make_room(alice)
    bomb = io.BytesIO()
    Image.new("1", (10_000, 8_000)).save(bomb, "PNG")  # 80 million pixels in a few kilobytes
    before = stored_files(media)
    with client_for(web, alice) as c:
        refused = upload(c, room.slug, "small.png", bomb.getvalue())
    assert refused.status_code == 415 and "10000x8000 pixels" in refused.json()["error"]["detail"]
    assert not Attachment.objects.filter(uploader=alice).exists() and stored_files(media) == before
