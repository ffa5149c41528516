{
  "targets": [
    {
      "target_name": "specforge_fpenv",
      "sources": ["src/fpenv.c"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
