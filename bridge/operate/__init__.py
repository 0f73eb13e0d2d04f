"""Running the bridge: metrics, the status server and page, the admin API, reloads."""
