"""The old ``type:`` name of the offline store plugin, kept working (it lives in stores/history/)."""
