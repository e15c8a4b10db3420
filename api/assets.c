// assets.c: files compiled into the binary: the OpenAPI document and the
// dashboard, so the service needs nothing beside itself.
#include "api/api_int.h"

// .incbin keeps the bytes as they are in the tree; the Makefile rebuilds
// this file when they change.
__asm__(".section .rodata\n"
        ".global api_openapi_yaml\n"
        ".type api_openapi_yaml, @object\n"
        "api_openapi_yaml:\n"
        ".incbin \"openapi.yaml\"\n"
        "api_openapi_yaml_end:\n"
        ".byte 0\n"
        ".global api_dashboard_html\n"
        ".type api_dashboard_html, @object\n"
        "api_dashboard_html:\n"
        ".incbin \"api/dashboard.html\"\n"
        "api_dashboard_html_end:\n"
        ".byte 0\n"
        ".balign 8\n"
        ".global api_openapi_yaml_len\n"
        "api_openapi_yaml_len:\n"
        ".quad api_openapi_yaml_end - api_openapi_yaml\n"
        ".global api_dashboard_html_len\n"
        "api_dashboard_html_len:\n"
        ".quad api_dashboard_html_end - api_dashboard_html\n"
        ".previous\n");
