"""Direct messages belong to their pair (contract §9): the room of a pair is found by its two members,
never by its slug, no user-created room can take the DM namespace, and a slug squatted before that
rule existed never makes `POST /api/dms/` fail."""

from concurrent.futures import ThreadPoolExecutor

from chat.models import Membership, Room
from tests.conftest import make_user
from tests.integration.test_api import client_for, post


def natural_slug(one, other) -> str:
    low, high = sorted([one.pk, other.pk])
    return f"dm-{low}-{high}"


def test_rooms_cannot_be_created_in_the_dm_namespace(web_a):
    owner = make_user("owner")
    with client_for(web_a, owner) as c:
        for slug in ("dm-1-2", "DM-plans"):
            refused = post(c, "/api/rooms/", {"name": "mine", "private": False, "slug": slug})
            assert refused.status_code == 400, (slug, refused.text)
            assert refused.json()["error"]["code"] == "invalid"
            assert "direct messages" in refused.json()["error"]["detail"]
        # A name that slugifies into the namespace gets a slug outside it rather than a refusal.
        named = post(c, "/api/rooms/", {"name": f"DM {owner.pk} {owner.pk + 1}", "private": False})
        assert named.status_code == 201, named.text
        assert not named.json()["slug"].startswith("dm-")
        assert post(c, "/api/rooms/", {"name": "dmz", "private": False, "slug": f"dmz-{owner.pk}"}).status_code == 201


def test_squatting_a_pairs_slug_through_the_api_is_refused_and_the_dm_opens(web_a, alice, bob):
    mallory = make_user("mallory")
    with client_for(web_a, mallory) as m:
        squat = post(m, "/api/rooms/", {"name": "gotcha", "private": False, "slug": natural_slug(alice, bob)})
        assert squat.status_code == 400
    with client_for(web_a, alice) as a, client_for(web_a, bob) as b:
        first = post(a, "/api/dms/", {"username": bob.username})
        assert first.status_code == 201, first.text
        again = post(b, "/api/dms/", {"username": alice.username})
        assert again.status_code == 200, again.text
        assert again.json()["slug"] == first.json()["slug"] and first.json()["private"] is True


def test_a_slug_squatted_before_the_rule_still_yields_the_pairs_dm(web_a, alice, bob):
    mallory, carol = make_user("mallory"), make_user("carol")
    natural = natural_slug(alice, bob)
    # The bad state older code let users create: public rooms holding the pair's slug (and the next one).
    for slug in (natural, f"{natural}-2"):
        squatted = Room.objects.create(slug=slug, name="gotcha", private=False, owner=mallory)
        Membership.objects.create(room=squatted, user=mallory, role=Membership.Role.OWNER)

    with client_for(web_a, alice) as a, client_for(web_a, bob) as b, ThreadPoolExecutor(2) as pool:
        # Both ask at the same moment: one room for the pair either way.
        answers = list(pool.map(lambda pair: post(pair[0], "/api/dms/", {"username": pair[1].username}),
                                [(a, bob), (b, alice)]))
        assert sorted(r.status_code for r in answers) == [200, 201], [r.text for r in answers]
        slug = answers[0].json()["slug"]
        assert answers[1].json()["slug"] == slug and slug not in (natural, f"{natural}-2")
        assert post(a, "/api/dms/", {"username": bob.username}).json()["slug"] == slug
        assert a.get(f"/api/rooms/{slug}/messages/").status_code == 200
        assert slug in [r["slug"] for r in b.get("/api/rooms/").json()["rooms"]]

    dm = Room.objects.get(slug=slug)
    assert dm.private and set(dm.members.all()) == {alice, bob}
    assert Room.objects.get(slug=natural).members.get() == mallory  # the squatter's room is left as it was
    with client_for(web_a, carol) as c:
        assert c.get(f"/api/rooms/{slug}/messages/").status_code == 404
        assert post(c, "/api/dms/", {"username": alice.username}).status_code == 201
