"""Suite-wide fixtures: a real notification server (dbus + Xvfb + dunst) for any test."""

pytest_plugins = ["fixtures.notification_server"]
