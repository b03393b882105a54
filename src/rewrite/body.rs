//! Streams a response body through the HTML rewriter in a task of its own.
