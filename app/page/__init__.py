"""The Streamlit page: its layout and tabs (``render``, ``video_view``, ``evaluate_tab``), the process-wide
upload pipeline and byte-budget cache the sessions share (``uploads``, ``cache``) and the URL parameters.

May import ``app.engine`` and ``app.ops``; never ``app.cli``.
"""
