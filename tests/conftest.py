"""Suite-wide fixtures: a real notification server (dbus + Xvfb + dunst) for any test."""

from hypothesis import settings

pytest_plugins = ["fixtures.notification_server"]

# Property tests check behaviour, not speed (bench/ measures that); a loaded CI core must not
# turn a slow example into a failure.
settings.register_profile("tunewatch", deadline=None)
settings.load_profile("tunewatch")
