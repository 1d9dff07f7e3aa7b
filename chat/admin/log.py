"""The moderation log and the dead-letter ledger in the admin."""

from django.contrib import admin

from chat.models import DeadLetterRedrive, ModerationAction


@admin.register(ModerationAction)
class ModerationActionAdmin(admin.ModelAdmin):
    """The moderation log: read-only, newest first."""

    list_display = ["created_at", "actor", "action", "target_user", "target_message", "reason"]
    list_filter = ["action", "created_at"]
    search_fields = ["actor__username", "target_user__username", "reason"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(DeadLetterRedrive)
class DeadLetterRedriveAdmin(admin.ModelAdmin):
    """The ledger of `manage.py deadletters redrive`: what was re-driven and what still fails (read-only;
    the command writes it)."""

    list_display = ["updated_at", "topic", "partition", "offset", "outcome", "attempts", "detail"]
    list_filter = ["outcome", "topic"]
    search_fields = ["source", "detail"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
