"""The floor: settings, errors, process helpers and metrics. Imports nothing of this project's."""
