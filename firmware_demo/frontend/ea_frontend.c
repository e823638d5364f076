/* edgeaudio C99 front end. See ea_frontend.h for the contract. */
#define EA_FRONTEND_DEFINE_TABLES
#include "ea_frontend.h"

#include <math.h>
#include <string.h>

#define EA_HALF_FFT (EA_N_FFT / 2)

/* In-place complex FFT of EA_HALF_FFT points stored interleaved (re, im) in z, radix-2
 * decimation in time. Twiddles W_M^j of the half-size transform are W_N^(2j) of the table. */
static void complex_fft_half(ea_fft_real_t *z)
{
    const int m = EA_HALF_FFT;
    int i, j, len;

    /* bit-reversal permutation */
    for (i = 1, j = 0; i < m; i++) {
        int bit = m >> 1;
        for (; j & bit; bit >>= 1)
            j ^= bit;
        j ^= bit;
        if (i < j) {
            ea_fft_real_t tr = z[2 * i], ti = z[2 * i + 1];
            z[2 * i] = z[2 * j];
            z[2 * i + 1] = z[2 * j + 1];
            z[2 * j] = tr;
            z[2 * j + 1] = ti;
        }
    }

    for (len = 2; len <= m; len <<= 1) {
        const int half = len >> 1;
        const int step = EA_N_FFT / len;
        for (i = 0; i < m; i += len) {
            ea_fft_real_t *a = z + 2 * i;
            ea_fft_real_t *b = a + 2 * half;
            for (j = 0; j < half; j++) {
                const ea_fft_real_t wr = ea_twiddle_cos[j * step];
                const ea_fft_real_t wi = -ea_twiddle_sin[j * step];
                const ea_fft_real_t br = b[2 * j], bi = b[2 * j + 1];
                const ea_fft_real_t tr = br * wr - bi * wi;
                const ea_fft_real_t ti = br * wi + bi * wr;
                const ea_fft_real_t ar = a[2 * j], ai = a[2 * j + 1];
                a[2 * j] = ar + tr;
                a[2 * j + 1] = ai + ti;
                b[2 * j] = ar - tr;
                b[2 * j + 1] = ai - ti;
            }
        }
    }
}

/* Power spectrum of the EA_N_FFT real samples in buf (destroyed) into power[EA_N_FREQS].
 * A real FFT of N points is one complex FFT of N/2 points on (even, odd) sample pairs,
 * untangled with X[k] = E[k] + W_N^k O[k]. */
static void real_fft_power(ea_fft_real_t *buf, float *power)
{
    const ea_fft_real_t half = (ea_fft_real_t)0.5;
    int k;
    complex_fft_half(buf);

    {
        const ea_fft_real_t r = buf[0], i = buf[1];
        power[0] = (float)((r + i) * (r + i));
        power[EA_HALF_FFT] = (float)((r - i) * (r - i));
    }
    for (k = 1; k < EA_HALF_FFT; k++) {
        const ea_fft_real_t ar = buf[2 * k], ai = buf[2 * k + 1];
        const ea_fft_real_t br = buf[2 * (EA_HALF_FFT - k)];
        const ea_fft_real_t bi = buf[2 * (EA_HALF_FFT - k) + 1];
        /* E = (Z[k] + conj Z[M-k]) / 2 and O = (Z[k] - conj Z[M-k]) / 2i */
        const ea_fft_real_t er = half * (ar + br), ei = half * (ai - bi);
        const ea_fft_real_t or_ = half * (ai + bi), oi = half * (br - ar);
        const ea_fft_real_t c = ea_twiddle_cos[k], s = ea_twiddle_sin[k]; /* W_N^k = c - i s */
        const ea_fft_real_t xr = er + c * or_ + s * oi;
        const ea_fft_real_t xi = ei + c * oi - s * or_;
        power[k] = (float)(xr * xr + xi * xi);
    }
}

/* One frame of EA_WIN_LENGTH samples -> EA_N_BINS log features. */
static void process_frame(const float *frame, ea_fft_real_t *fft, float *power,
                          float *features)
{
    int i, b;
    for (i = 0; i < EA_WIN_LENGTH; i++)
        fft[i] = (ea_fft_real_t)frame[i] * (ea_fft_real_t)ea_window[i]; /* exact in double */
    for (; i < EA_N_FFT; i++)
        fft[i] = 0;

    real_fft_power(fft, power);

    for (b = 0; b < EA_N_BINS; b++) {
        const float *p = power + ea_fb_start[b];
        const float *w = ea_fb_weights + ea_fb_offset[b];
        const int len = (int)ea_fb_length[b];
        float sum = 0.0f;
        for (i = 0; i < len; i++)
            sum += p[i] * w[i];
        features[b] = logf(sum + EA_LOG_OFFSET);
    }
}

void ea_frontend_reset(ea_frontend_t *fe)
{
    fe->fill = 0;
    fe->skip = 0;
    fe->frames = 0;
}

void ea_frontend_init(ea_frontend_t *fe)
{
    memset(fe, 0, sizeof(*fe));
    ea_frontend_reset(fe);
}

/* Shared by the float and int16 pushes; exactly one of f32 / i16 is non-NULL. */
static int push_samples(ea_frontend_t *fe, const float *f32, const int16_t *i16, int n,
                        int *frame_ready)
{
    int used = 0;
    *frame_ready = 0;
    while (used < n) {
        int k, take;
        if (fe->skip > 0) {
            take = n - used < fe->skip ? n - used : fe->skip;
            fe->skip -= take;
            used += take;
            continue;
        }
        take = EA_WIN_LENGTH - fe->fill;
        if (take > n - used)
            take = n - used;
        if (f32) {
            memcpy(fe->samples + fe->fill, f32 + used, (size_t)take * sizeof(float));
        } else {
            for (k = 0; k < take; k++) /* 1/32768 is exact, so this equals libsndfile's read */
                fe->samples[fe->fill + k] = (float)i16[used + k] * (1.0f / 32768.0f);
        }
        fe->fill += take;
        used += take;
        if (fe->fill == EA_WIN_LENGTH) {
            process_frame(fe->samples, fe->fft, fe->power, fe->features);
            fe->frames++;
#if EA_HOP_LENGTH < EA_WIN_LENGTH
            /* keep the overlap: the next frame starts EA_HOP_LENGTH samples later */
            memmove(fe->samples, fe->samples + EA_HOP_LENGTH,
                    (size_t)(EA_WIN_LENGTH - EA_HOP_LENGTH) * sizeof(float));
            fe->fill = EA_WIN_LENGTH - EA_HOP_LENGTH;
#else
            fe->fill = 0;
            fe->skip = EA_HOP_LENGTH - EA_WIN_LENGTH;
#endif
            *frame_ready = 1;
            break; /* hand the frame out before it is overwritten */
        }
    }
    return used;
}

int ea_frontend_push_float(ea_frontend_t *fe, const float *samples, int n, int *frame_ready)
{
    return push_samples(fe, samples, 0, n, frame_ready);
}

int ea_frontend_push_int16(ea_frontend_t *fe, const int16_t *samples, int n, int *frame_ready)
{
    return push_samples(fe, 0, samples, n, frame_ready);
}

const float *ea_frontend_features(const ea_frontend_t *fe)
{
    return fe->features;
}

int ea_frontend_n_frames(int n_samples)
{
    if (n_samples < EA_WIN_LENGTH)
        return 0;
    return 1 + (n_samples - EA_WIN_LENGTH) / EA_HOP_LENGTH;
}

int ea_frontend_compute(const float *wave, int n, float *out_features)
{
    ea_fft_real_t fft[EA_N_FFT];
    float power[EA_N_FREQS];
    const int n_frames = ea_frontend_n_frames(n);
    int f;
    for (f = 0; f < n_frames; f++)
        process_frame(wave + (long)f * EA_HOP_LENGTH, fft, power,
                      out_features + (long)f * EA_N_BINS);
    return n_frames;
}

void ea_frontend_quantize(const float *features, int8_t *out, int n, float scale, int zero_point)
{
    int i;
    for (i = 0; i < n; i++) {
        float q = roundf(features[i] / scale) + (float)zero_point;
        if (!(q >= -128.0f)) /* also catches NaN */
            q = -128.0f;
        else if (q > 127.0f)
            q = 127.0f;
        out[i] = (int8_t)q;
    }
}

#ifdef EA_HAS_INPUT_QUANT
void ea_frontend_quantize_input(const float *features, int8_t *out, int n)
{
    ea_frontend_quantize(features, out, n, EA_INPUT_SCALE, EA_INPUT_ZERO_POINT);
}
#endif
