"""Stock statistics over a bundled data set, served as JSON over HTTP."""
