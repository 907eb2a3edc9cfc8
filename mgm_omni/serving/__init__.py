"""HTTP API and web demo: translate requests and responses, call the speech engine and the MLLM backend.

``app.create_app`` builds the OpenAI-compatible FastAPI app; ``server.run`` serves it with uvicorn;
``web_demo.build_demo`` builds the Gradio UI on the same services. Nothing here defines a model.
"""
