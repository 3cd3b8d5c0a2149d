//! The HTTP service: the Open Media Match compatible API, background tasks, configuration.
