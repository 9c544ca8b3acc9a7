"""Where an item's image bytes come from: uploads in the media store, URLs, server paths."""
