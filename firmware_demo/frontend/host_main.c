/* Host harness for the C front end (tests and benchmarks, not for the device).
 *
 * usage: ea_frontend_host [--int16] [--chunk N] [--window N] [--int8 PATH]
 *                         [--scale S --zero-point Z] [--bench REPEATS] [--model-out PATH]
 *                         INPUT OUTPUT
 *   INPUT   raw mono samples, native-endian float32 (or int16 PCM with --int16); "-" = stdin
 *   OUTPUT  float32 features [frames][EA_N_BINS], row-major; "-" = stdout
 *   --chunk N      push N samples at a time through the streaming API
 *                  (default: the whole buffer through ea_frontend_compute)
 *   --window N     the input is back-to-back model windows of N samples each: every window
 *                  goes through the front end on its own (a fresh stream with --chunk), and
 *                  the output holds their frames one window after the other
 *   --int8 PATH    also write int8 features, quantized with --scale/--zero-point, or with the
 *                  header's EA_INPUT_SCALE/EA_INPUT_ZERO_POINT when it has them
 *   --bench R      run the front end R more times and print its cost to stderr as
 *                  "us_per_audio_second=<float> frames=<int> repeats=<int>"
 *   --model-out P  (built with -DEA_HOST_WITH_MODEL and gen_firmware.py's ea_model_data.c)
 *                  write the compiled model array, exactly the bytes a board flashes, to P
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime under -std=c99 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ea_frontend.h"
#ifdef EA_HOST_WITH_MODEL
#include "ea_model_data.h"
#endif

static void die(const char *msg)
{
    fprintf(stderr, "ea_frontend_host: %s\n", msg);
    exit(2);
}

/* Whole input in memory: the harness is host-only, so malloc is fine here. */
static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    size_t cap = 1 << 16, len = 0, got;
    unsigned char *buf = malloc(cap);
    if (!f)
        die("cannot open input");
    if (!buf)
        die("out of memory");
    while ((got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            unsigned char *bigger = realloc(buf, cap *= 2);
            if (!bigger)
                die("out of memory");
            buf = bigger;
        }
    }
    if (ferror(f))
        die("read error on input");
    if (f != stdin)
        fclose(f);
    *size = len;
    return buf;
}

static FILE *open_out(const char *path)
{
    FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "wb");
    if (!f)
        die("cannot open output");
    return f;
}

/* Runs the front end once over n samples; returns the frame count. */
static int run_frontend(const float *wave, const int16_t *pcm, int n, int chunk, float *features)
{
    static ea_frontend_t fe;
    int frames = 0, pos = 0;
    if (chunk <= 0)
        return ea_frontend_compute(wave, n, features);
    ea_frontend_init(&fe);
    while (pos < n) {
        int ready, len = n - pos < chunk ? n - pos : chunk;
        while (len > 0) {
            int used = pcm ? ea_frontend_push_int16(&fe, pcm + pos, len, &ready)
                           : ea_frontend_push_float(&fe, wave + pos, len, &ready);
            pos += used;
            len -= used;
            if (ready) {
                if (features)
                    memcpy(features + (long)frames * EA_N_BINS, ea_frontend_features(&fe),
                           sizeof(float) * EA_N_BINS);
                frames++;
            }
        }
    }
    return frames;
}

/* Each window of `window` samples on its own (window <= 0: the whole buffer as one stream);
 * returns the total frame count. */
static int run_windows(const float *wave, const int16_t *pcm, int n, int chunk, int window,
                       float *features)
{
    int start, frames = 0;
    if (window <= 0)
        return run_frontend(wave, pcm, n, chunk, features);
    for (start = 0; start + window <= n; start += window)
        frames += run_frontend(wave + start, pcm ? pcm + start : NULL, window, chunk,
                               features + (long)frames * EA_N_BINS);
    return frames;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    const char *in_path = NULL, *out_path = NULL, *int8_path = NULL, *model_path = NULL;
    int is_int16 = 0, chunk = 0, window = 0, repeats = 0, have_scale = 0, have_zp = 0;
    int zero_point = 0;
    float scale = 0.0f;
    size_t size;
    unsigned char *raw;
    float *wave, *features;
    const int16_t *pcm = NULL;
    int n, n_frames, i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int has_value = i + 1 < argc;
        if (strcmp(a, "--int16") == 0) {
            is_int16 = 1;
        } else if (strcmp(a, "--chunk") == 0 && has_value) {
            chunk = atoi(argv[++i]);
            if (chunk <= 0)
                die("--chunk needs a positive sample count");
        } else if (strcmp(a, "--window") == 0 && has_value) {
            window = atoi(argv[++i]);
            if (window <= 0)
                die("--window needs a positive sample count");
        } else if (strcmp(a, "--model-out") == 0 && has_value) {
            model_path = argv[++i];
        } else if (strcmp(a, "--int8") == 0 && has_value) {
            int8_path = argv[++i];
        } else if (strcmp(a, "--scale") == 0 && has_value) {
            scale = (float)atof(argv[++i]);
            have_scale = 1;
        } else if (strcmp(a, "--zero-point") == 0 && has_value) {
            zero_point = atoi(argv[++i]);
            have_zp = 1;
        } else if (strcmp(a, "--bench") == 0 && has_value) {
            repeats = atoi(argv[++i]);
        } else if (a[0] == '-' && a[1] != '\0') {
            die("unknown option or missing value (see the comment atop host_main.c)");
        } else if (!in_path) {
            in_path = a;
        } else if (!out_path) {
            out_path = a;
        } else {
            die("too many arguments");
        }
    }
    if (!in_path || !out_path)
        die("usage: ea_frontend_host [--int16] [--chunk N] [--window N] [--int8 PATH] "
            "[--scale S --zero-point Z] [--bench R] [--model-out PATH] INPUT OUTPUT");
    if (model_path) {
#ifdef EA_HOST_WITH_MODEL
        FILE *out = open_out(model_path);
        if (fwrite(ea_model_data, 1, ea_model_data_len, out) != ea_model_data_len)
            die("write error on model output");
        if (out != stdout)
            fclose(out);
#else
        die("--model-out needs a build with -DEA_HOST_WITH_MODEL and ea_model_data.c");
#endif
    }
    if (have_scale != have_zp)
        die("give --scale and --zero-point together");
#ifdef EA_HAS_INPUT_QUANT
    if (!have_scale) {
        scale = EA_INPUT_SCALE;
        zero_point = EA_INPUT_ZERO_POINT;
        have_scale = 1;
    }
#endif
    if (int8_path && !(have_scale && scale > 0.0f))
        die("--int8 needs a positive --scale and a --zero-point (or a header with them)");

    raw = read_all(in_path, &size);
    n = (int)(size / (is_int16 ? sizeof(int16_t) : sizeof(float)));
    wave = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!wave)
        die("out of memory");
    if (is_int16) {
        pcm = (const int16_t *)raw;
        for (i = 0; i < n; i++)
            wave[i] = (float)pcm[i] * (1.0f / 32768.0f);
    } else {
        memcpy(wave, raw, sizeof(float) * (size_t)n);
    }

    if (window > 0 && n % window != 0)
        die("--window: the input is not a whole number of windows");
    features = malloc(sizeof(float) * (size_t)EA_N_BINS *
                      (size_t)(window > 0 ? (n / window) * ea_frontend_n_frames(window) + 1
                                          : ea_frontend_n_frames(n) + 1));
    if (!features)
        die("out of memory");
    n_frames = run_windows(wave, pcm, n, chunk, window, features);

    {
        FILE *out = open_out(out_path);
        if (fwrite(features, sizeof(float) * EA_N_BINS, (size_t)n_frames, out)
                != (size_t)n_frames)
            die("write error on output");
        if (out != stdout)
            fclose(out);
        else
            fflush(out);
    }
    if (int8_path) {
        const int count = n_frames * EA_N_BINS;
        int8_t *q = malloc((size_t)(count > 0 ? count : 1));
        FILE *out;
        if (!q)
            die("out of memory");
        ea_frontend_quantize(features, q, count, scale, zero_point);
        out = open_out(int8_path);
        if (fwrite(q, 1, (size_t)count, out) != (size_t)count)
            die("write error on int8 output");
        if (out != stdout)
            fclose(out);
        free(q);
    }

    if (repeats > 0 && n_frames > 0) {
        volatile float sink = 0.0f; /* keeps the optimizer from dropping the work */
        double t0 = now_s(), elapsed;
        for (i = 0; i < repeats; i++) {
            run_windows(wave, pcm, n, chunk, window, features);
            sink += features[0];
        }
        elapsed = now_s() - t0;
        (void)sink;
        fprintf(stderr, "us_per_audio_second=%.2f frames=%d repeats=%d\n",
                1e6 * elapsed / repeats / ((double)n / EA_SAMPLE_RATE), n_frames, repeats);
    }

    free(features);
    free(wave);
    free(raw);
    return 0;
}
