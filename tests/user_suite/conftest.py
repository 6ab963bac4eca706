"""``project/`` is a user's own project (an app module and its tests), run the way its user
runs it, in a pytest subprocess whose only engine fixtures are the plugin's:
tests/integration/test_testing_plugin.py does that. This repo's own run must not collect it
here, where tests/conftest.py's fixtures and settings would apply."""

collect_ignore = ["project"]
