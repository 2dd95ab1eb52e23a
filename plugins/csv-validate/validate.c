/*
 * csv-validate: a Sluice plugin that checks a CSV file against a schema and fails the step
 * with a report when the data does not hold.
 *
 * config:
 *   file                 the CSV, relative to /work or absolute (/inputs/x.csv)   required
 *   min_rows             the fewest data rows                                    default 1
 *   allow_extra_columns  whether columns outside the schema are fine             default true
 *   columns:             name -> rules; every column named here must exist
 *     type               string | integer | number | boolean                    default string
 *     min, max           bounds for integer and number columns
 *     allowed            the values a column may hold (a list of strings)
 *     max_null_rate      the largest share of nulls (empty, NA, null, NaN)       default 0
 *
 * Outputs: rows, violations, and per column nulls, null_rate, type_errors, range_errors,
 * min and max. Metrics: rows, violations. The full report goes to the step log.
 */
#include "../common/sluice_plugin.h"

typedef enum { T_STRING, T_INTEGER, T_NUMBER, T_BOOLEAN } col_type;

typedef struct {
    const char *name;
    const sp_json *rules;
    col_type type;
    long index;
    double min, max;
    int has_min, has_max;
    double max_null_rate;
    const sp_json *allowed;
    /* what was found */
    size_t nulls, type_errors, range_errors, not_allowed;
    size_t first_type_row, first_range_row, first_allowed_row;
    double seen_min, seen_max;
    int seen_any;
} column;

static char **violations;
static size_t n_violations, cap_violations;

static void violation(const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n_violations == cap_violations) {
        cap_violations = cap_violations ? cap_violations * 2 : 16;
        violations = sp_realloc(violations, cap_violations * sizeof *violations);
    }
    violations[n_violations++] = strcpy(sp_alloc(strlen(buf) + 1), buf);
}

static col_type parse_type(const char *name, const char *t) {
    if (!strcmp(t, "string")) return T_STRING;
    if (!strcmp(t, "integer")) return T_INTEGER;
    if (!strcmp(t, "number")) return T_NUMBER;
    if (!strcmp(t, "boolean")) return T_BOOLEAN;
    sp_die("config.columns.%s.type must be string, integer, number or boolean, not `%s`", name, t);
    return T_STRING;
}

static const char *type_name(col_type t) {
    return t == T_INTEGER ? "integers" : t == T_NUMBER ? "numbers" : t == T_BOOLEAN ? "booleans" : "strings";
}

/* Checks one non-null value's type; gives its number (booleans are 0/1). */
static int typed(col_type t, const char *s, double *num) {
    switch (t) {
    case T_STRING: return 1;
    case T_NUMBER: return sp_parse_number(s, num);
    case T_INTEGER: return sp_parse_number(s, num) && *num == floor(*num) && !strpbrk(s, ".eE");
    case T_BOOLEAN:
        if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "True") || !strcmp(s, "TRUE")) { *num = 1; return 1; }
        if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "False") || !strcmp(s, "FALSE")) { *num = 0; return 1; }
        return 0;
    }
    return 0;
}

int main(void) {
    sp_json *input = sp_input();
    sp_json *config = sp_get(input, "config");
    const char *file = sp_get_str(config, "file", NULL);
    if (!file) sp_die("csv-validate: config.file is missing (the CSV to check)");
    double min_rows = 1;
    sp_get_num(config, "min_rows", &min_rows);
    int allow_extra = sp_get_bool(config, "allow_extra_columns", 1);
    sp_json *schema = sp_get(config, "columns");
    if (!schema || schema->kind != SP_OBJ || schema->len == 0)
        sp_die("csv-validate: config.columns must map column names to rules");

    sp_csv csv = sp_csv_read(file);
    size_t rows = csv.n_rows - 1, width = csv.widths[0];

    size_t n_cols = schema->len;
    column *cols = sp_alloc(n_cols * sizeof *cols);
    memset(cols, 0, n_cols * sizeof *cols);
    for (size_t i = 0; i < n_cols; i++) {
        column *c = &cols[i];
        c->name = schema->keys[i];
        c->rules = schema->items[i];
        if (c->rules->kind != SP_OBJ) sp_die("config.columns.%s must be a map of rules", c->name);
        c->type = parse_type(c->name, sp_get_str(c->rules, "type", "string"));
        c->has_min = sp_get_num(c->rules, "min", &c->min);
        c->has_max = sp_get_num(c->rules, "max", &c->max);
        sp_get_num(c->rules, "max_null_rate", &c->max_null_rate);
        c->allowed = sp_get(c->rules, "allowed");
        if (c->allowed && c->allowed->kind != SP_ARR) sp_die("config.columns.%s.allowed must be a list", c->name);
        c->index = sp_csv_column(&csv, c->name);
        if (c->index < 0) violation("column `%s` is missing from the header", c->name);
    }
    if (!allow_extra) {
        for (size_t k = 0; k < width; k++) {
            int known = 0;
            for (size_t i = 0; i < n_cols; i++) known |= !strcmp(cols[i].name, csv.rows[0][k]);
            if (!known) violation("column `%s` is not in the schema (allow_extra_columns is false)", csv.rows[0][k]);
        }
    }

    size_t ragged = 0, first_ragged = 0;
    for (size_t r = 1; r < csv.n_rows; r++) {
        if (csv.widths[r] != width && ragged++ == 0) first_ragged = r;
        for (size_t i = 0; i < n_cols; i++) {
            column *c = &cols[i];
            if (c->index < 0) continue;
            const char *v = sp_csv_field(&csv, r, c->index);
            if (sp_is_null(v)) { c->nulls++; continue; }
            double num = 0;
            if (!typed(c->type, v, &num)) {
                if (c->type_errors++ == 0) c->first_type_row = r;
                continue;
            }
            if (c->type != T_STRING) {
                if (!c->seen_any || num < c->seen_min) c->seen_min = num;
                if (!c->seen_any || num > c->seen_max) c->seen_max = num;
                c->seen_any = 1;
                if ((c->has_min && num < c->min) || (c->has_max && num > c->max))
                    if (c->range_errors++ == 0) c->first_range_row = r;
            }
            if (c->allowed && !sp_list_has(c->allowed, v))
                if (c->not_allowed++ == 0) c->first_allowed_row = r;
        }
    }

    if (ragged)
        violation("%zu rows have a different number of fields than the header's %zu (first: line %zu)", ragged,
                  width, first_ragged + 1);
    if ((double)rows < min_rows) violation("the file has %zu data rows, fewer than min_rows %.0f", rows, min_rows);
    for (size_t i = 0; i < n_cols; i++) {
        column *c = &cols[i];
        if (c->index < 0) continue;
        if (c->type_errors)
            violation("column `%s`: %zu values are not %s (first: line %zu, `%s`)", c->name, c->type_errors,
                      type_name(c->type), c->first_type_row + 1, sp_csv_field(&csv, c->first_type_row, c->index));
        if (c->range_errors) {
            char bounds[96] = "";
            if (c->has_min && c->has_max) snprintf(bounds, sizeof bounds, "[%g, %g]", c->min, c->max);
            else if (c->has_min) snprintf(bounds, sizeof bounds, ">= %g", c->min);
            else snprintf(bounds, sizeof bounds, "<= %g", c->max);
            violation("column `%s`: %zu values are outside %s (first: line %zu, `%s`)", c->name, c->range_errors,
                      bounds, c->first_range_row + 1, sp_csv_field(&csv, c->first_range_row, c->index));
        }
        if (c->not_allowed)
            violation("column `%s`: %zu values are not among the allowed ones (first: line %zu, `%s`)", c->name,
                      c->not_allowed, c->first_allowed_row + 1, sp_csv_field(&csv, c->first_allowed_row, c->index));
        double rate = rows ? (double)c->nulls / (double)rows : 0;
        if (rate > c->max_null_rate)
            violation("column `%s`: %zu of %zu values are null (rate %.4f), over max_null_rate %g", c->name, c->nulls,
                      rows, rate, c->max_null_rate);
    }

    fprintf(stderr, "csv-validate: %s: %zu rows, %zu columns, %zu violations\n", file, rows, width, n_violations);
    for (size_t i = 0; i < n_violations; i++) fprintf(stderr, "  - %s\n", violations[i]);

    printf("{\"outputs\":{\"rows\":%zu,\"violations\":%zu,\"columns\":{", rows, n_violations);
    for (size_t i = 0; i < n_cols; i++) {
        column *c = &cols[i];
        if (i) putchar(',');
        sp_put_str(stdout, c->name);
        printf(":{\"present\":%s,\"nulls\":%zu,\"null_rate\":", c->index >= 0 ? "true" : "false", c->nulls);
        sp_put_num(stdout, rows ? (double)c->nulls / (double)rows : 0);
        printf(",\"type_errors\":%zu,\"range_errors\":%zu", c->type_errors, c->range_errors);
        if (c->seen_any) {
            printf(",\"min\":");
            sp_put_num(stdout, c->seen_min);
            printf(",\"max\":");
            sp_put_num(stdout, c->seen_max);
        }
        putchar('}');
    }
    printf("}},\"metrics\":{\"rows\":%zu,\"violations\":%zu}", rows, n_violations);
    if (n_violations) {
        char message[700];
        if (n_violations == 1) snprintf(message, sizeof message, "%s", violations[0]);
        else snprintf(message, sizeof message, "%s (and %zu more; see the step log)", violations[0], n_violations - 1);
        printf(",\"status\":\"failed\",\"message\":");
        sp_put_str(stdout, message);
    }
    printf("}\n");
    return 0;
}
