"""The front ends: the ``mvk`` command line and the Streamlit app."""
