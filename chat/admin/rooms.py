"""Rooms and their members in the admin."""

from django.contrib import admin

from chat.models import Membership, Room


class MembershipInline(admin.TabularInline):
    """A room's members. A DM's are its pair (as in services.rooms): staff cannot join it from here."""

    model = Membership
    extra = 0
    raw_id_fields = ["user"]

    def has_add_permission(self, request, obj=None) -> bool:
        return not (obj is not None and obj.direct_key) and super().has_add_permission(request, obj)

    def has_change_permission(self, request, obj=None) -> bool:
        return not (obj is not None and obj.direct_key) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return not (obj is not None and obj.direct_key) and super().has_delete_permission(request, obj)


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "private", "owner", "created_at"]
    search_fields = ["name", "slug"]
    list_filter = ["private"]
    raw_id_fields = ["owner"]
    inlines = [MembershipInline]


