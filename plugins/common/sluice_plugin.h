/*
 * sluice_plugin.h: what a C plugin for Sluice needs, in one header: read the input document,
 * parse JSON, read CSV files, write the result document. Build with Debian's clang and
 * wasi-libc:  clang --target=wasm32-wasi -O2 plugin.c -o plugin.wasm
 *
 * The ABI itself is in plugins/README.md; nothing here is required to follow it.
 */
#ifndef SLUICE_PLUGIN_H
#define SLUICE_PLUGIN_H

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Helpers a plugin does not use are no warning. */
#define SP_FN static __attribute__((unused))

/* ---------- failing ---------- */

/* Prints a message to stderr (the step log) and exits non-zero: the attempt fails and may be
 * retried. Use for broken input, not for data that fails a check (see sp_result_failed). */
SP_FN void sp_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

SP_FN void *sp_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) sp_die("out of memory (asked for %zu bytes); raise wasm.max_memory", n);
    return p;
}

SP_FN void *sp_realloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) sp_die("out of memory (asked for %zu bytes); raise wasm.max_memory", n);
    return p;
}

/* ---------- reading whole streams ---------- */

SP_FN char *sp_read_stream(FILE *f, size_t *len_out) {
    size_t cap = 1 << 16, len = 0;
    char *buf = sp_alloc(cap + 1);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = sp_realloc(buf, cap + 1);
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        if (n == 0) break;
        len += n;
    }
    buf[len] = '\0';
    if (len_out) *len_out = len;
    return buf;
}

/* A path as the plugin sees it: absolute paths stay (/inputs/x.csv), others are under /work. */
SP_FN char *sp_path(const char *path) {
    if (path[0] == '/') return strcpy(sp_alloc(strlen(path) + 1), path);
    char *full = sp_alloc(strlen(path) + 7);
    strcpy(full, "/work/");
    strcat(full, path);
    return full;
}

SP_FN char *sp_read_file(const char *path, size_t *len_out) {
    char *full = sp_path(path);
    FILE *f = fopen(full, "rb");
    if (!f) sp_die("cannot open %s: %s", full, strerror(errno));
    char *text = sp_read_stream(f, len_out);
    fclose(f);
    free(full);
    return text;
}

/* ---------- JSON ---------- */

typedef enum { SP_NULL, SP_BOOL, SP_NUM, SP_STR, SP_ARR, SP_OBJ } sp_kind;

typedef struct sp_json {
    sp_kind kind;
    int boolean;
    double num;
    char *str;              /* SP_STR */
    struct sp_json **items; /* SP_ARR values, SP_OBJ values */
    char **keys;            /* SP_OBJ */
    size_t len;
} sp_json;

typedef struct {
    const char *p;
    const char *end;
    int depth;
} sp_parser;

SP_FN void sp_json_fail(sp_parser *ps, const char *what) {
    sp_die("the input document is not valid JSON: %s at byte %ld", what, (long)(ps->end - ps->p));
}

SP_FN void sp_ws(sp_parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t')) ps->p++;
}

SP_FN sp_json *sp_new(sp_kind kind) {
    sp_json *v = sp_alloc(sizeof *v);
    memset(v, 0, sizeof *v);
    v->kind = kind;
    return v;
}

SP_FN void sp_utf8(char **out, unsigned cp) {
    char *o = *out;
    if (cp < 0x80) *o++ = (char)cp;
    else if (cp < 0x800) { *o++ = (char)(0xC0 | (cp >> 6)); *o++ = (char)(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12)); *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)); *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18)); *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)); *o++ = (char)(0x80 | (cp & 0x3F));
    }
    *out = o;
}

SP_FN unsigned sp_hex4(sp_parser *ps) {
    if (ps->end - ps->p < 4) sp_json_fail(ps, "a short \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *ps->p++;
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else sp_json_fail(ps, "a bad \\u escape");
    }
    return v;
}

SP_FN char *sp_string(sp_parser *ps) {
    ps->p++; /* the opening quote */
    char *buf = sp_alloc((size_t)(ps->end - ps->p) + 1), *o = buf;
    while (ps->p < ps->end && *ps->p != '"') {
        char c = *ps->p++;
        if (c != '\\') { *o++ = c; continue; }
        if (ps->p >= ps->end) break;
        c = *ps->p++;
        switch (c) {
        case 'n': *o++ = '\n'; break;
        case 't': *o++ = '\t'; break;
        case 'r': *o++ = '\r'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'u': {
            unsigned cp = sp_hex4(ps);
            if (cp >= 0xD800 && cp < 0xDC00 && ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
                ps->p += 2;
                unsigned lo = sp_hex4(ps);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            sp_utf8(&o, cp);
            break;
        }
        default: *o++ = c; /* \" \\ \/ */
        }
    }
    if (ps->p >= ps->end) sp_json_fail(ps, "an unterminated string");
    ps->p++;
    *o = '\0';
    return buf;
}

SP_FN sp_json *sp_value(sp_parser *ps);

SP_FN sp_json *sp_container(sp_parser *ps, int object) {
    sp_json *v = sp_new(object ? SP_OBJ : SP_ARR);
    size_t cap = 0;
    ps->p++;
    if (++ps->depth > 256) sp_json_fail(ps, "nesting deeper than 256");
    sp_ws(ps);
    if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) { ps->p++; ps->depth--; return v; }
    for (;;) {
        if (v->len == cap) {
            cap = cap ? cap * 2 : 8;
            v->items = sp_realloc(v->items, cap * sizeof *v->items);
            if (object) v->keys = sp_realloc(v->keys, cap * sizeof *v->keys);
        }
        sp_ws(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"') sp_json_fail(ps, "a key that is not a string");
            v->keys[v->len] = sp_string(ps);
            sp_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') sp_json_fail(ps, "a missing `:`");
            ps->p++;
        }
        v->items[v->len++] = sp_value(ps);
        sp_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
        if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) { ps->p++; break; }
        sp_json_fail(ps, "a missing `,` or closing bracket");
    }
    ps->depth--;
    return v;
}

SP_FN sp_json *sp_value(sp_parser *ps) {
    sp_ws(ps);
    if (ps->p >= ps->end) sp_json_fail(ps, "an unexpected end");
    char c = *ps->p;
    if (c == '{') return sp_container(ps, 1);
    if (c == '[') return sp_container(ps, 0);
    if (c == '"') { sp_json *v = sp_new(SP_STR); v->str = sp_string(ps); return v; }
    if (!strncmp(ps->p, "true", 4)) { ps->p += 4; sp_json *v = sp_new(SP_BOOL); v->boolean = 1; return v; }
    if (!strncmp(ps->p, "false", 5)) { ps->p += 5; return sp_new(SP_BOOL); }
    if (!strncmp(ps->p, "null", 4)) { ps->p += 4; return sp_new(SP_NULL); }
    char *end;
    double d = strtod(ps->p, &end);
    if (end == ps->p) sp_json_fail(ps, "an unexpected character");
    ps->p = end;
    sp_json *v = sp_new(SP_NUM);
    v->num = d;
    return v;
}

SP_FN sp_json *sp_parse(const char *text, size_t len) {
    sp_parser ps = {text, text + len, 0};
    sp_json *v = sp_value(&ps);
    sp_ws(&ps);
    if (ps.p != ps.end) sp_json_fail(&ps, "text after the document");
    return v;
}

/* The member `key` of an object, or NULL. */
SP_FN sp_json *sp_get(const sp_json *obj, const char *key) {
    if (!obj || obj->kind != SP_OBJ) return NULL;
    for (size_t i = 0; i < obj->len; i++)
        if (!strcmp(obj->keys[i], key)) return obj->items[i];
    return NULL;
}

SP_FN const char *sp_get_str(const sp_json *obj, const char *key, const char *fallback) {
    sp_json *v = sp_get(obj, key);
    if (!v || v->kind == SP_NULL) return fallback;
    if (v->kind != SP_STR) sp_die("config.%s must be a string", key);
    return v->str;
}

/* A number, or a string holding one (templated values arrive as strings). */
SP_FN int sp_get_num(const sp_json *obj, const char *key, double *out) {
    sp_json *v = sp_get(obj, key);
    if (!v || v->kind == SP_NULL) return 0;
    if (v->kind == SP_NUM) { *out = v->num; return 1; }
    if (v->kind == SP_STR) {
        char *end;
        *out = strtod(v->str, &end);
        if (end != v->str && *end == '\0') return 1;
    }
    sp_die("config.%s must be a number", key);
    return 0;
}

SP_FN int sp_get_bool(const sp_json *obj, const char *key, int fallback) {
    sp_json *v = sp_get(obj, key);
    if (!v || v->kind == SP_NULL) return fallback;
    if (v->kind != SP_BOOL) sp_die("config.%s must be true or false", key);
    return v->boolean;
}

/* Whether a list of strings holds `s`. */
SP_FN int sp_list_has(const sp_json *list, const char *s) {
    if (!list || list->kind != SP_ARR) return 0;
    for (size_t i = 0; i < list->len; i++)
        if (list->items[i]->kind == SP_STR && !strcmp(list->items[i]->str, s)) return 1;
    return 0;
}

/* Reads the input document from stdin. */
SP_FN sp_json *sp_input(void) {
    size_t len;
    char *text = sp_read_stream(stdin, &len);
    return sp_parse(text, len);
}

/* ---------- writing JSON ---------- */

SP_FN void sp_put_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { fputc('\\', f); fputc(c, f); }
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

/* A number as JSON: NaN and infinities have no JSON form and become null. */
SP_FN void sp_put_num(FILE *f, double d) {
    if (isnan(d) || isinf(d)) fputs("null", f);
    else if (d == (double)(long long)d && fabs(d) < 1e15) fprintf(f, "%lld", (long long)d);
    else fprintf(f, "%.6g", d);
}

/* ---------- CSV (RFC 4180: quoted fields, doubled quotes, CRLF) ---------- */

typedef struct {
    char ***rows;    /* rows[r][c], header included as row 0 */
    size_t *widths;  /* fields per row */
    size_t n_rows;
} sp_csv;

SP_FN sp_csv sp_csv_parse(char *text, size_t len) {
    sp_csv csv = {0};
    size_t cap_rows = 0, cap_fields = 0, n_fields = 0;
    char **fields = NULL;
    char *p = text, *end = text + len;
    while (p < end) {
        /* one field */
        char *start = p, *o = p;
        if (*p == '"') {
            p++;
            start = o = p;
            while (p < end) {
                if (*p == '"') {
                    if (p + 1 < end && p[1] == '"') { *o++ = '"'; p += 2; continue; }
                    p++;
                    break;
                }
                *o++ = *p++;
            }
        } else {
            while (p < end && *p != ',' && *p != '\n' && *p != '\r') *o++ = *p++;
        }
        char sep = p < end ? *p : '\n';
        *o = '\0';
        if (n_fields == cap_fields) {
            cap_fields = cap_fields ? cap_fields * 2 : 16;
            fields = sp_realloc(fields, cap_fields * sizeof *fields);
        }
        fields[n_fields++] = start;
        if (sep == '\r') { p++; if (p < end && *p == '\n') p++; sep = '\n'; }
        else if (p < end) p++;
        if (sep == '\n' || p >= end) {
            /* a blank line is no row */
            if (!(n_fields == 1 && fields[0][0] == '\0')) {
                if (csv.n_rows == cap_rows) {
                    cap_rows = cap_rows ? cap_rows * 2 : 1024;
                    csv.rows = sp_realloc(csv.rows, cap_rows * sizeof *csv.rows);
                    csv.widths = sp_realloc(csv.widths, cap_rows * sizeof *csv.widths);
                }
                csv.rows[csv.n_rows] = sp_alloc(n_fields * sizeof(char *));
                memcpy(csv.rows[csv.n_rows], fields, n_fields * sizeof(char *));
                csv.widths[csv.n_rows++] = n_fields;
            }
            n_fields = 0;
        }
    }
    free(fields);
    return csv;
}

SP_FN sp_csv sp_csv_read(const char *path) {
    size_t len;
    char *text = sp_read_file(path, &len);
    sp_csv csv = sp_csv_parse(text, len);
    if (csv.n_rows == 0) sp_die("%s is empty: it has no header row", path);
    return csv;
}

/* The index of a header column, or -1. */
SP_FN long sp_csv_column(const sp_csv *csv, const char *name) {
    for (size_t c = 0; c < csv->widths[0]; c++)
        if (!strcmp(csv->rows[0][c], name)) return (long)c;
    return -1;
}

/* A field, or "" when the row is short. */
SP_FN const char *sp_csv_field(const sp_csv *csv, size_t row, long col) {
    return col >= 0 && (size_t)col < csv->widths[row] ? csv->rows[row][col] : "";
}

/* Empty fields and the usual spellings of a missing value count as null. */
SP_FN int sp_is_null(const char *s) {
    return s[0] == '\0' || !strcmp(s, "NA") || !strcmp(s, "N/A") || !strcmp(s, "null") || !strcmp(s, "NULL") ||
           !strcmp(s, "NaN");
}

SP_FN int sp_parse_number(const char *s, double *out) {
    char *end;
    errno = 0;
    double d = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || isnan(d) || isinf(d)) return 0;
    *out = d;
    return 1;
}

SP_FN void sp_csv_write_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n\r")) { fputs(s, f); return; }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

#endif
