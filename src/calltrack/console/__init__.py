"""The console at ``/console/``: server-rendered pages over v4's queries and the admin library,
for the people who read calls rather than JSON. See docs/console.md."""
