// edgeaudio on an ESP32-S3 with an I2S MEMS microphone (e.g. INMP441): microphone -> C front end
// -> TensorFlow Lite Micro -> label over serial.
//
// Sketch for ESP-IDF 5 with the esp-tflite-micro component. It cannot be built on the edgeaudio
// CI machines (no Xtensa toolchain there); what it includes is exactly what the host tests build
// and check: ea_frontend.c, and ea_model_data.c / *.h from gen_firmware.py. See README.md.
#include <stdio.h>
#include <string.h>

#include "driver/i2s_std.h"
#include "freertos/FreeRTOS.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

#include "ea_frontend.h"
#include "ea_model_data.h"

#if !EA_INPUT_INT8
#error "build the firmware from an int8 model (edgeaudio export ... --int8)"
#endif

// Pins of the I2S microphone; change for your board.
#define MIC_BCLK 41
#define MIC_WS 42
#define MIC_DIN 2
#define SAMPLE_RATE EA_SAMPLE_RATE
#define READ_SAMPLES 256
// The tensor arena: the smallest one TFLM allocated this model in on the host (gen_firmware.py
// searched it; 32-bit boards need a little less), plus headroom. Set it by hand otherwise.
#ifdef EA_ARENA_MIN_BYTES
#define ARENA_BYTES (EA_ARENA_MIN_BYTES + 4 * 1024)
#else
#define ARENA_BYTES (128 * 1024)
#endif

static uint8_t arena[ARENA_BYTES] __attribute__((aligned(16)));
static ea_frontend_t frontend;
static int8_t window[EA_N_FRAMES][EA_N_BINS];  // the model window, a ring of int8 frames
static int next_frame = 0;                      // ring slot the next frame goes to

static i2s_chan_handle_t open_microphone(void) {
    i2s_chan_handle_t rx;
    i2s_chan_config_t chan = I2S_CHANNEL_DEFAULT_CONFIG(I2S_NUM_0, I2S_ROLE_MASTER);
    ESP_ERROR_CHECK(i2s_new_channel(&chan, NULL, &rx));
    i2s_std_config_t std = {
        .clk_cfg = I2S_STD_CLK_DEFAULT_CONFIG(SAMPLE_RATE),
        .slot_cfg = I2S_STD_PHILIPS_SLOT_DEFAULT_CONFIG(I2S_DATA_BIT_WIDTH_16BIT,
                                                        I2S_SLOT_MODE_MONO),
        .gpio_cfg = {.mclk = I2S_GPIO_UNUSED, .bclk = (gpio_num_t)MIC_BCLK,
                     .ws = (gpio_num_t)MIC_WS, .dout = I2S_GPIO_UNUSED,
                     .din = (gpio_num_t)MIC_DIN},
    };
    ESP_ERROR_CHECK(i2s_channel_init_std_mode(rx, &std));
    ESP_ERROR_CHECK(i2s_channel_enable(rx));
    return rx;
}

extern "C" void app_main(void) {
    const tflite::Model *model = tflite::GetModel(ea_model_data);
    // Exactly the ops the graph uses (gen_firmware.py lists them from the model file).
    static tflite::MicroMutableOpResolver<EA_N_MODEL_OPS> ops;
    EA_ADD_MODEL_OPS(ops);
    static tflite::MicroInterpreter interpreter(model, ops, arena, ARENA_BYTES);
    if (interpreter.AllocateTensors() != kTfLiteOk) {
        printf("tensor arena too small (%d bytes)\n", ARENA_BYTES);
        return;
    }
    TfLiteTensor *input = interpreter.input(0);
    TfLiteTensor *output = interpreter.output(0);
    const int frames_per_hop = (int)(EA_HOP_SECONDS * SAMPLE_RATE / EA_HOP_LENGTH + 0.5f);

    i2s_chan_handle_t mic = open_microphone();
    ea_frontend_init(&frontend);
    static int16_t pcm[READ_SAMPLES];
    int frames_since_inference = 0;
    long frames_seen = 0;
    printf("edgeaudio: %s, %d labels, %u model bytes\n", EA_MODEL_NAME, EA_N_LABELS,
           ea_model_data_len);

    for (;;) {
        size_t got = 0;
        i2s_channel_read(mic, pcm, sizeof(pcm), &got, portMAX_DELAY);
        int n = (int)(got / sizeof(int16_t)), used = 0;
        while (used < n) {
            int ready = 0;
            used += ea_frontend_push_int16(&frontend, pcm + used, n - used, &ready);
            if (!ready) continue;
            ea_frontend_quantize_input(ea_frontend_features(&frontend), window[next_frame],
                                       EA_N_BINS);
            next_frame = (next_frame + 1) % EA_N_FRAMES;
            frames_seen++;
            if (++frames_since_inference < frames_per_hop || frames_seen < EA_N_FRAMES) continue;
            frames_since_inference = 0;
            // oldest frame first, as the model was trained
            for (int f = 0; f < EA_N_FRAMES; f++) {
                memcpy(input->data.int8 + f * EA_N_BINS,
                       window[(next_frame + f) % EA_N_FRAMES], EA_N_BINS);
            }
            if (interpreter.Invoke() != kTfLiteOk) continue;
            int best = 0;
            for (int c = 1; c < EA_N_LABELS; c++) {
                if (output->data.int8[c] > output->data.int8[best]) best = c;
            }
            float score = (output->data.int8[best] - output->params.zero_point) *
                          output->params.scale;
            printf("%s %.2f\n", ea_labels[best], score);
        }
    }
}
