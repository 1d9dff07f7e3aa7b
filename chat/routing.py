from django.urls import re_path

from chat.consumers import ChatConsumer
from chat.user_consumer import UserConsumer

websocket_urlpatterns = [
    re_path(r"^ws/chat/(?P<slug>[-\w]+)/$", ChatConsumer.as_asgi()),
    re_path(r"^ws/user/$", UserConsumer.as_asgi()),
]
