"""Domain services used by the JSON API and the UI alike: views only translate HTTP."""
