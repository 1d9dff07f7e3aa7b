"""The staff's moderation desk. Actions call services; nothing here deletes rows by hand."""

from django.contrib import admin

from chat.models import ChatProfile, Membership, Message, ModerationAction, Report, Room


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    raw_id_fields = ["user"]


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "private", "owner", "created_at"]
    search_fields = ["name", "slug"]
    list_filter = ["private"]
    inlines = [MembershipInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["room", "seq", "author", "body", "created_at", "hidden", "deleted"]
    list_filter = ["room", "hidden", "deleted", "created_at"]
    search_fields = ["body", "author__username"]
    readonly_fields = ["id", "room", "seq", "author", "body", "created_at", "edited_at", "client_id", "deleted"]


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ["message", "reporter", "reason", "created_at", "resolved"]
    list_filter = ["resolved"]


@admin.register(ChatProfile)
class ChatProfileAdmin(admin.ModelAdmin):
    list_display = ["user", "banned", "muted_until"]
    search_fields = ["user__username"]


@admin.register(ModerationAction)
class ModerationActionAdmin(admin.ModelAdmin):
    list_display = ["created_at", "actor", "action", "target_user", "target_message", "reason"]
    list_filter = ["action"]
