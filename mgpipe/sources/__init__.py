"""What users bring, read into mgpipe's terms: label tables, skeleton files, videos."""
