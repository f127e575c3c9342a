"""Pure parsers: a webhook body (bytes) becomes a `Notification`, or a `PayloadError` says why."""
