from django.contrib import admin
from django.urls import include, path

from chat import account_views, api, files, health, views
from chat.admin import desk
from chat.forms import AdminLoginForm
from chat.password_reset import PasswordResetView

admin.site.login_form = AdminLoginForm  # the admin's login is throttled like the site's

urlpatterns = [
    path("", views.home, name="home"),
    path("rooms/<slug:slug>/", views.room, name="room"),
    path("accounts/signup/", views.signup, name="signup"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/password_reset/", PasswordResetView.as_view(), name="password_reset"),
    path("accounts/settings/", account_views.account_settings, name="account_settings"),
    path("accounts/settings/export/", account_views.account_export, name="account_export"),
    path("accounts/settings/delete/", account_views.account_delete, name="account_delete"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/chat/desk/", admin.site.admin_view(desk.desk), name="chat_desk"),
    path("admin/", admin.site.urls),
    path("api/rooms/", api.rooms),
    path("api/rooms/<slug:slug>/", api.room_detail),
    path("api/rooms/<slug:slug>/members/", api.room_members),
    path("api/rooms/<slug:slug>/members/<str:username>/", api.room_member),
    path("api/rooms/<slug:slug>/messages/", api.room_messages),
    path("api/rooms/<slug:slug>/attachments/", api.room_attachments),
    path("api/dms/", api.dms),
    path("api/search/", api.search),
    path("api/mentions/", api.mentions),
    path("api/blocks/", api.blocks_view),
    path("api/blocks/<str:username>/", api.block),
    # Any id: a malformed one gets the same JSON 404 as a file the user may not read.
    path("files/<str:attachment_id>/thumb.webp", files.thumbnail),
    path("files/<str:attachment_id>/<path:name>", files.download),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", health.metrics_view),
]
