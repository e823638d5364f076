/* edgeaudio C99 front end: waveform -> log filterbank features -> int8 model input.
 *
 * The same steps as edgeaudio/frontend.py (the single definition of the features):
 * frames of EA_WIN_LENGTH samples every EA_HOP_LENGTH samples (no centre padding), periodic Hann
 * window zero-padded to EA_N_FFT, real FFT, power |X|^2, filterbank, log(. + EA_LOG_OFFSET).
 * Sizes and tables come from ea_frontend_config.h, written by gen_frontend_header.py.
 *
 * No dynamic allocation: all state lives in an ea_frontend_t the caller places (static, global
 * or on a stack), about 4 * (EA_WIN_LENGTH + EA_N_FFT + EA_N_FREQS + EA_N_BINS) bytes (4.9 KiB
 * for the default spec; the FFT buffer doubles under EA_FFT_DOUBLE).
 *
 * Streaming use:
 *     static ea_frontend_t fe;
 *     ea_frontend_init(&fe);
 *     while (n > 0) {
 *         int ready, used = ea_frontend_push_int16(&fe, pcm, n, &ready);
 *         pcm += used; n -= used;
 *         if (ready) consume(ea_frontend_features(&fe));   // EA_N_BINS floats
 *     }
 */
#ifndef EA_FRONTEND_H
#define EA_FRONTEND_H

#include <stdint.h>

#include "ea_frontend_config.h"

#if (EA_N_FFT & (EA_N_FFT - 1)) != 0 || EA_N_FFT < 4
#error "EA_N_FFT must be a power of two >= 4 (the FFT is radix-2)"
#endif
#if EA_WIN_LENGTH > EA_N_FFT
#error "EA_WIN_LENGTH must not exceed EA_N_FFT"
#endif
#if EA_HOP_LENGTH <= 0 || EA_WIN_LENGTH <= 0
#error "EA_WIN_LENGTH and EA_HOP_LENGTH must be positive"
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    float samples[EA_WIN_LENGTH]; /* the window being filled */
    ea_fft_real_t fft[EA_N_FFT];  /* FFT work buffer */
    float power[EA_N_FREQS];      /* power spectrum of the last frame */
    float features[EA_N_BINS];    /* log features of the last completed frame */
    int fill;                     /* samples held in samples[] */
    int skip;                     /* samples still to drop when hop > window */
    long frames;                  /* frames completed since init/reset */
} ea_frontend_t;

/* Clears the stream state; call before the first push. */
void ea_frontend_init(ea_frontend_t *fe);
void ea_frontend_reset(ea_frontend_t *fe);

/* Feed up to n samples (float in [-1, 1], or int16 PCM scaled by 1/32768 as libsndfile does).
 * Consumes samples until a frame completes or the input runs out, and returns how many it
 * consumed; *frame_ready is 1 when a frame completed (its features are then in
 * ea_frontend_features until the next push), else 0. Call again with the rest. */
int ea_frontend_push_float(ea_frontend_t *fe, const float *samples, int n, int *frame_ready);
int ea_frontend_push_int16(ea_frontend_t *fe, const int16_t *samples, int n, int *frame_ready);

/* The EA_N_BINS log features of the last completed frame. */
const float *ea_frontend_features(const ea_frontend_t *fe);

/* Frames a buffer of n samples gives: 0 when shorter than one window. */
int ea_frontend_n_frames(int n_samples);

/* Whole-buffer front end (host tests, offline use): writes ea_frontend_n_frames(n) * EA_N_BINS
 * floats, row-major [frame][bin], to out_features and returns the frame count. Uses about
 * 4 * (EA_N_FFT + EA_N_FREQS) bytes of stack (the FFT part doubles under EA_FFT_DOUBLE). */
int ea_frontend_compute(const float *wave, int n, float *out_features);

/* q = clamp(round(x / scale) + zero_point, -128, 127), rounding half away from zero as
 * TensorFlow Lite's reference Quantize does; NaN maps to -128. */
void ea_frontend_quantize(const float *features, int8_t *out, int n, float scale, int zero_point);

#ifdef EA_HAS_INPUT_QUANT
/* Quantize with the model's input scale and zero point from the generated header. */
void ea_frontend_quantize_input(const float *features, int8_t *out, int n);
#endif

#ifdef __cplusplus
}
#endif

#endif /* EA_FRONTEND_H */
