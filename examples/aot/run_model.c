/* run_model.c: links a model compiled by `kiln compile` and runs it on .npy files.
 *
 *   cc -O2 -DKILN_MODEL=NAME -include NAME.h run_model.c NAME.o -o run_NAME
 *   ./run_NAME input_0.npy [input_1.npy ...] OUTDIR     (writes OUTDIR/output_K.npy)
 *
 * The header's NAME_inputs / NAME_outputs tables give each buffer's dtype, shape and size;
 * inputs must match them exactly (no conversion). Uses only the C standard library. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef KILN_MODEL
#error "compile with -DKILN_MODEL=NAME -include NAME.h"
#endif
/* the runner's own names (KILN_RUNNER_*) stay clear of the header's NAME_* macros */
#define KILN_CAT2(a, b) a##b
#define KILN_CAT(a, b) KILN_CAT2(a, b)
#define KILN_RUNNER_INPUTS KILN_CAT(KILN_MODEL, _inputs)
#define KILN_RUNNER_OUTPUTS KILN_CAT(KILN_MODEL, _outputs)
#define KILN_RUNNER_NUM_INPUTS (sizeof(KILN_RUNNER_INPUTS) / sizeof(KILN_RUNNER_INPUTS[0]))
#define KILN_RUNNER_NUM_OUTPUTS (sizeof(KILN_RUNNER_OUTPUTS) / sizeof(KILN_RUNNER_OUTPUTS[0]))
#define KILN_RUNNER_RUN KILN_CAT(KILN_MODEL, _run)
#define KILN_RUNNER_SCRATCH_SIZE KILN_CAT(KILN_MODEL, _scratch_size)

static void die(const char *what, const char *path) {
    fprintf(stderr, "run_model: %s: %s\n", path, what);
    exit(1);
}

/* Read an .npy file (format 1.0-3.0, C order) and check it against `info`. */
static void *read_npy(const char *path, const kiln_tensor_info *info) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open", path);
    unsigned char magic[8];
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "\x93NUMPY", 6) != 0) die("not an .npy file", path);
    size_t header_len;
    if (magic[6] == 1) {
        unsigned char b[2];
        if (fread(b, 1, 2, f) != 2) die("truncated header", path);
        header_len = b[0] | (size_t)b[1] << 8;
    } else {
        unsigned char b[4];
        if (fread(b, 1, 4, f) != 4) die("truncated header", path);
        header_len = b[0] | (size_t)b[1] << 8 | (size_t)b[2] << 16 | (size_t)b[3] << 24;
    }
    char *header = calloc(header_len + 1, 1);
    if (!header || fread(header, 1, header_len, f) != header_len) die("truncated header", path);
    char expected[64];
    snprintf(expected, sizeof expected, "'descr': '%s'", info->descr);
    if (!strstr(header, expected)) die("dtype differs from the model's input", path);
    if (strstr(header, "'fortran_order': True")) die("Fortran order is not supported", path);
    const char *shape = strstr(header, "'shape': (");
    if (!shape) die("no shape in header", path);
    shape += strlen("'shape': (");
    for (size_t d = 0; d < info->rank; d++) {
        char *end;
        unsigned long long dim = strtoull(shape, &end, 10);
        if (end == shape || dim != info->shape[d]) die("shape differs from the model's input", path);
        shape = end;
        while (*shape == ',' || *shape == ' ') shape++;
    }
    if (*shape != ')') die("rank differs from the model's input", path);
    free(header);
    void *data = malloc(info->bytes ? info->bytes : 1);
    if (!data || fread(data, 1, info->bytes, f) != info->bytes) die("truncated data", path);
    fclose(f);
    return data;
}

static void write_npy(const char *path, const kiln_tensor_info *info, const void *data) {
    char header[256];
    int n = snprintf(header, sizeof header, "{'descr': '%s', 'fortran_order': False, 'shape': (", info->descr);
    for (size_t d = 0; d < info->rank; d++)
        n += snprintf(header + n, sizeof header - n, "%llu%s", (unsigned long long)info->shape[d],
                      info->rank == 1 ? "," : (d + 1 < info->rank ? ", " : ""));
    n += snprintf(header + n, sizeof header - n, "), }");
    /* pad with spaces to a multiple of 64 bytes, newline last */
    size_t total = 10 + (size_t)n + 1;
    size_t padded = (total + 63) / 64 * 64;
    FILE *f = fopen(path, "wb");
    if (!f) die("cannot create", path);
    size_t header_len = padded - 10;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0,
                             (unsigned char)(header_len & 0xff), (unsigned char)(header_len >> 8)};
    fwrite(pre, 1, 10, f);
    fwrite(header, 1, (size_t)n, f);
    for (size_t i = total; i < padded; i++) fputc(' ', f);
    fputc('\n', f);
    if (fwrite(data, 1, info->bytes, f) != info->bytes) die("write failed", path);
    fclose(f);
}

int main(int argc, char **argv) {
    if ((size_t)argc != KILN_RUNNER_NUM_INPUTS + 2) {
        fprintf(stderr, "usage: %s", argv[0]);
        for (size_t i = 0; i < KILN_RUNNER_NUM_INPUTS; i++) fprintf(stderr, " %s.npy", KILN_RUNNER_INPUTS[i].name);
        fprintf(stderr, " OUTDIR\n");
        return 2;
    }
    const void *inputs[KILN_RUNNER_NUM_INPUTS + 1];
    void *outputs[KILN_RUNNER_NUM_OUTPUTS + 1];
    for (size_t i = 0; i < KILN_RUNNER_NUM_INPUTS; i++) inputs[i] = read_npy(argv[1 + i], &KILN_RUNNER_INPUTS[i]);
    for (size_t k = 0; k < KILN_RUNNER_NUM_OUTPUTS; k++) {
        outputs[k] = malloc(KILN_RUNNER_OUTPUTS[k].bytes ? KILN_RUNNER_OUTPUTS[k].bytes : 1);
        if (!outputs[k]) die("out of memory", "outputs");
    }
    /* the scratch: 64-byte aligned, NAME_scratch_size() bytes (C11 aligned_alloc wants a
       multiple of the alignment) */
    size_t scratch_size = (KILN_RUNNER_SCRATCH_SIZE() + 63) / 64 * 64;
    void *scratch = aligned_alloc(64, scratch_size ? scratch_size : 64);
    if (!scratch) die("out of memory", "scratch");
    int status = KILN_RUNNER_RUN(inputs, outputs, scratch);
    if (status != 0) {
        fprintf(stderr, "run_model: the model returned %d\n", status);
        return 1;
    }
    const char *dir = argv[argc - 1];
    for (size_t k = 0; k < KILN_RUNNER_NUM_OUTPUTS; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/output_%zu.npy", dir, k);
        write_npy(path, &KILN_RUNNER_OUTPUTS[k], outputs[k]);
    }
    return 0;
}
