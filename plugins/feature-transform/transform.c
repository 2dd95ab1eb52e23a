/*
 * feature-transform: a Sluice plugin that turns a CSV of raw columns into model features and
 * reports summary statistics.
 *
 * config:
 *   file         the input CSV, relative to /work or absolute (/inputs/x.csv)     required
 *   output       the CSV to write, relative to /work                              required
 *   keep         columns copied as they are (ids, the label)
 *   log1p        numeric columns replaced by log(1 + x) (before any scaling; x must be > -1)
 *   standardize  numeric columns scaled to (x - mean) / std
 *   min_max      numeric columns scaled to (x - min) / (max - min)
 *   one_hot      categorical columns replaced by one 0/1 column per value, `name=value`
 *   fill         how nulls in numeric columns are filled: mean (default) or zero
 *
 * Outputs: output (the file, relative to /work), rows, columns (the written header),
 * stats (per numeric column of the input: count, nulls, mean, std, min, max) and scaling
 * (per numeric column: log1p, center, scale), so the same transform can be applied at
 * inference. Metrics: rows, features.
 */
#include "../common/sluice_plugin.h"

typedef struct {
    const char *name;
    long index;
    int log1p, standardize, min_max;
    /* input statistics */
    size_t count, nulls;
    double sum, sumsq, min, max;
    /* statistics after log1p, used for scaling */
    double t_sum, t_sumsq, t_min, t_max;
    double center, scale, fill;
} numeric;

typedef struct {
    const char *name;
    long index;
    char **values;
    size_t n_values;
} categorical;

/* Ends the attempt with a failed result: bad data is not worth a retry. */
static void fail(const char *fmt, ...) {
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "feature-transform: %s\n", buf);
    printf("{\"status\":\"failed\",\"message\":");
    sp_put_str(stdout, buf);
    printf("}\n");
    exit(0);
}

static const sp_json *list(const sp_json *config, const char *key) {
    const sp_json *l = sp_get(config, key);
    if (!l || l->kind == SP_NULL) return NULL;
    if (l->kind != SP_ARR) sp_die("config.%s must be a list of column names", key);
    for (size_t i = 0; i < l->len; i++)
        if (l->items[i]->kind != SP_STR) sp_die("config.%s must be a list of column names", key);
    return l;
}

static long column_or_fail(const sp_csv *csv, const char *name, const char *file) {
    long i = sp_csv_column(csv, name);
    if (i < 0) fail("%s has no column `%s`", file, name);
    return i;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void) {
    sp_json *input = sp_input();
    sp_json *config = sp_get(input, "config");
    const char *file = sp_get_str(config, "file", NULL);
    const char *output = sp_get_str(config, "output", NULL);
    if (!file || !output) sp_die("feature-transform: config.file and config.output are required");
    if (output[0] == '/' && strncmp(output, "/work/", 6)) sp_die("config.output must be inside /work");
    const char *fill = sp_get_str(config, "fill", "mean");
    if (strcmp(fill, "mean") && strcmp(fill, "zero")) sp_die("config.fill must be mean or zero, not `%s`", fill);
    const sp_json *keep = list(config, "keep"), *logs = list(config, "log1p"), *std = list(config, "standardize"),
                  *mm = list(config, "min_max"), *hot = list(config, "one_hot");

    sp_csv csv = sp_csv_read(file);
    size_t rows = csv.n_rows - 1;

    /* the numeric columns, in config order, each once */
    const sp_json *numeric_lists[3] = {std, mm, logs};
    numeric *nums = NULL;
    size_t n_nums = 0;
    for (int l = 0; l < 3; l++) {
        const sp_json *lst = numeric_lists[l];
        for (size_t i = 0; lst && i < lst->len; i++) {
            const char *name = lst->items[i]->str;
            size_t k = 0;
            while (k < n_nums && strcmp(nums[k].name, name)) k++;
            if (k == n_nums) {
                nums = sp_realloc(nums, (n_nums + 1) * sizeof *nums);
                memset(&nums[n_nums], 0, sizeof *nums);
                nums[n_nums].name = name;
                nums[n_nums].index = column_or_fail(&csv, name, file);
                n_nums++;
            }
            if (l == 0) nums[k].standardize = 1;
            if (l == 1) nums[k].min_max = 1;
            if (l == 2) nums[k].log1p = 1;
        }
    }
    for (size_t k = 0; k < n_nums; k++)
        if (nums[k].standardize && nums[k].min_max) fail("column `%s` is in both standardize and min_max", nums[k].name);

    /* pass 1: statistics */
    for (size_t k = 0; k < n_nums; k++) {
        numeric *n = &nums[k];
        for (size_t r = 1; r < csv.n_rows; r++) {
            const char *v = sp_csv_field(&csv, r, n->index);
            double x, t;
            if (sp_is_null(v)) { n->nulls++; continue; }
            if (!sp_parse_number(v, &x)) fail("column `%s` is not numeric: line %zu holds `%s`", n->name, r + 1, v);
            if (n->log1p && x <= -1) fail("column `%s`: log1p needs values above -1, line %zu holds %g", n->name, r + 1, x);
            t = n->log1p ? log1p(x) : x;
            if (n->count == 0 || x < n->min) n->min = x;
            if (n->count == 0 || x > n->max) n->max = x;
            if (n->count == 0 || t < n->t_min) n->t_min = t;
            if (n->count == 0 || t > n->t_max) n->t_max = t;
            n->count++;
            n->sum += x;
            n->sumsq += x * x;
            n->t_sum += t;
            n->t_sumsq += t * t;
        }
        if (n->count == 0) fail("column `%s` has no values", n->name);
        double t_mean = n->t_sum / (double)n->count;
        double t_var = n->t_sumsq / (double)n->count - t_mean * t_mean;
        n->fill = strcmp(fill, "zero") ? t_mean : 0;
        n->center = 0;
        n->scale = 1;
        if (n->standardize) {
            n->center = t_mean;
            n->scale = t_var > 1e-24 ? sqrt(t_var) : 1;
        } else if (n->min_max) {
            n->center = n->t_min;
            n->scale = n->t_max > n->t_min ? n->t_max - n->t_min : 1;
        }
    }

    /* the categories of each one-hot column, sorted */
    size_t n_cats = hot ? hot->len : 0;
    categorical *cats = sp_alloc((n_cats ? n_cats : 1) * sizeof *cats);
    for (size_t i = 0; i < n_cats; i++) {
        categorical *c = &cats[i];
        c->name = hot->items[i]->str;
        c->index = column_or_fail(&csv, c->name, file);
        c->values = sp_alloc(rows * sizeof(char *) + 1);
        c->n_values = 0;
        for (size_t r = 1; r < csv.n_rows; r++) c->values[c->n_values++] = (char *)sp_csv_field(&csv, r, c->index);
        qsort(c->values, c->n_values, sizeof(char *), cmp_str);
        size_t u = 0;
        for (size_t k = 0; k < c->n_values; k++)
            if (!sp_is_null(c->values[k]) && (u == 0 || strcmp(c->values[u - 1], c->values[k])))
                c->values[u++] = c->values[k];
        c->n_values = u;
        if (u > 1000) fail("column `%s` has %zu categories; one_hot takes at most 1000", c->name, u);
    }

    /* pass 2: write */
    char *path = sp_path(output);
    FILE *out = fopen(path, "w");
    if (!out) sp_die("cannot write %s: %s", path, strerror(errno));
    size_t n_keep = keep ? keep->len : 0, features = n_nums;
    long *keep_ix = sp_alloc((n_keep ? n_keep : 1) * sizeof *keep_ix);
    int first = 1;
    for (size_t i = 0; i < n_keep; i++) {
        keep_ix[i] = column_or_fail(&csv, keep->items[i]->str, file);
        if (!first) fputc(',', out);
        sp_csv_write_field(out, keep->items[i]->str);
        first = 0;
    }
    for (size_t k = 0; k < n_nums; k++) {
        if (!first) fputc(',', out);
        sp_csv_write_field(out, nums[k].name);
        first = 0;
    }
    for (size_t i = 0; i < n_cats; i++)
        for (size_t v = 0; v < cats[i].n_values; v++) {
            if (!first) fputc(',', out);
            char name[512];
            snprintf(name, sizeof name, "%s=%s", cats[i].name, cats[i].values[v]);
            sp_csv_write_field(out, name);
            first = 0;
            features++;
        }
    fputc('\n', out);
    for (size_t r = 1; r < csv.n_rows; r++) {
        first = 1;
        for (size_t i = 0; i < n_keep; i++) {
            if (!first) fputc(',', out);
            sp_csv_write_field(out, sp_csv_field(&csv, r, keep_ix[i]));
            first = 0;
        }
        for (size_t k = 0; k < n_nums; k++) {
            numeric *n = &nums[k];
            const char *v = sp_csv_field(&csv, r, n->index);
            double x, t;
            if (sp_is_null(v)) t = n->fill;
            else {
                sp_parse_number(v, &x);
                t = n->log1p ? log1p(x) : x;
            }
            if (!first) fputc(',', out);
            fprintf(out, "%.6g", (t - n->center) / n->scale);
            first = 0;
        }
        for (size_t i = 0; i < n_cats; i++) {
            const char *v = sp_csv_field(&csv, r, cats[i].index);
            for (size_t k = 0; k < cats[i].n_values; k++) {
                if (!first) fputc(',', out);
                fputc(strcmp(v, cats[i].values[k]) ? '0' : '1', out);
                first = 0;
            }
        }
        fputc('\n', out);
    }
    if (fclose(out) != 0) sp_die("cannot write %s: %s", path, strerror(errno));

    fprintf(stderr, "feature-transform: %s -> %s: %zu rows, %zu features\n", file, output, rows, features);
    printf("{\"outputs\":{\"output\":");
    sp_put_str(stdout, output);
    printf(",\"rows\":%zu,\"columns\":[", rows);
    first = 1;
    for (size_t i = 0; i < n_keep; i++) { if (!first) putchar(','); sp_put_str(stdout, keep->items[i]->str); first = 0; }
    for (size_t k = 0; k < n_nums; k++) { if (!first) putchar(','); sp_put_str(stdout, nums[k].name); first = 0; }
    for (size_t i = 0; i < n_cats; i++)
        for (size_t v = 0; v < cats[i].n_values; v++) {
            char name[512];
            snprintf(name, sizeof name, "%s=%s", cats[i].name, cats[i].values[v]);
            if (!first) putchar(',');
            sp_put_str(stdout, name);
            first = 0;
        }
    printf("],\"stats\":{");
    for (size_t k = 0; k < n_nums; k++) {
        numeric *n = &nums[k];
        double mean = n->sum / (double)n->count, var = n->sumsq / (double)n->count - mean * mean;
        if (k) putchar(',');
        sp_put_str(stdout, n->name);
        printf(":{\"count\":%zu,\"nulls\":%zu,\"mean\":", n->count, n->nulls);
        sp_put_num(stdout, mean);
        printf(",\"std\":");
        sp_put_num(stdout, var > 0 ? sqrt(var) : 0);
        printf(",\"min\":");
        sp_put_num(stdout, n->min);
        printf(",\"max\":");
        sp_put_num(stdout, n->max);
        putchar('}');
    }
    printf("},\"scaling\":{");
    for (size_t k = 0; k < n_nums; k++) {
        if (k) putchar(',');
        sp_put_str(stdout, nums[k].name);
        printf(":{\"log1p\":%s,\"center\":", nums[k].log1p ? "true" : "false");
        sp_put_num(stdout, nums[k].center);
        printf(",\"scale\":");
        sp_put_num(stdout, nums[k].scale);
        putchar('}');
    }
    printf("}},\"metrics\":{\"rows\":%zu,\"features\":%zu}}\n", rows, features);
    return 0;
}
