def pytest_collection_modifyitems(config, items):
    """The audits run only when the marker expression names them (`-m audit`, `-m "audit and not slow"`): a plain
    `python -m pytest` or `-m "not slow"` leaves them out (deselected), so the suite's time does not grow."""
    if "audit" in (config.option.markexpr or ""):
        return
    deselected = [item for item in items if item.get_closest_marker("audit")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("audit")]
