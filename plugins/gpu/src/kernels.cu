// facecast's lip-sync kernels: the per-frame work around a Wav2Lip-class model, on the GPU.
// Each kernel does exactly the arithmetic of its CPU reference (src/reference.rs, in the same
// order, compiled with --fmad=false), so the two agree to the last level of 8-bit colour.
// Frames are RGBA, `pitch` bytes per row; crops are CROP x CROP.

#define CROP 96

// fp16 <-> fp32 without cuda_fp16.h (NVRTC ships it only in some versions).
__device__ __forceinline__ unsigned short f32_to_f16(float v) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    return h;
}
__device__ __forceinline__ float f16_to_f32(unsigned short h) {
    float v;
    asm("cvt.f32.f16 %0, %1;" : "=f"(v) : "h"(h));
    return v;
}

// The face box (rx, ry, rw, rh) of `frame` resized bilinearly (pixel centres aligned, like
// OpenCV's INTER_LINEAR) to CROP x CROP RGB. One thread per crop pixel; blockIdx.z: the face.
extern "C" __global__ void crop_face(const unsigned char* frame, int pitch, const int* boxes,
                                     unsigned char* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int b = blockIdx.z;
    if (x >= CROP || y >= CROP) return;
    const int* box = boxes + 4 * b;
    int rx = box[0], ry = box[1], rw = box[2], rh = box[3];
    unsigned char* o = out + (size_t)b * CROP * CROP * 3 + (y * CROP + x) * 3;
    if (rw == 0 || rh == 0) {
        o[0] = o[1] = o[2] = 0;
        return;
    }
    float fx = (float)rw / (float)CROP;
    float fy = (float)rh / (float)CROP;
    float max_x = (float)(rw - 1);
    float max_y = (float)(rh - 1);
    float sy = fminf(fmaxf(((float)y + 0.5f) * fy - 0.5f, 0.0f), max_y);
    int y0 = (int)floorf(sy);
    int y1 = min(y0 + 1, rh - 1);
    float wy = sy - (float)y0;
    float sx = fminf(fmaxf(((float)x + 0.5f) * fx - 0.5f, 0.0f), max_x);
    int x0 = (int)floorf(sx);
    int x1 = min(x0 + 1, rw - 1);
    float wx = sx - (float)x0;
    const unsigned char* a = frame + (size_t)(ry + y0) * pitch + (rx + x0) * 4;
    const unsigned char* bb = frame + (size_t)(ry + y0) * pitch + (rx + x1) * 4;
    const unsigned char* c = frame + (size_t)(ry + y1) * pitch + (rx + x0) * 4;
    const unsigned char* d = frame + (size_t)(ry + y1) * pitch + (rx + x1) * 4;
    for (int ch = 0; ch < 3; ch++) {
        float top = (float)a[ch] * (1.0f - wx) + (float)bb[ch] * wx;
        float bottom = (float)c[ch] * (1.0f - wx) + (float)d[ch] * wx;
        o[ch] = (unsigned char)roundf(top * (1.0f - wy) + bottom * wy);
    }
}

// The model's face input from crops: per face [6][CROP][CROP] fp16, channels B, G, R of the
// crop with its lower half zeroed (what to draw), then B, G, R of the whole crop (who), 0..1.
extern "C" __global__ void face_tensor(const unsigned char* crops, unsigned short* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int b = blockIdx.z;
    if (x >= CROP || y >= CROP) return;
    const int plane = CROP * CROP;
    const unsigned char* p = crops + (size_t)b * plane * 3 + (y * CROP + x) * 3;
    unsigned short* o = out + (size_t)b * 6 * plane + y * CROP + x;
    for (int c = 0; c < 3; c++) {
        float v = (float)p[2 - c] / 255.0f;
        o[c * plane] = f32_to_f16(y < CROP / 2 ? v : 0.0f);
        o[(3 + c) * plane] = f32_to_f16(v);
    }
}

// The same input in fp32, for models whose inputs are fp32 (published Wav2Lip exports, and
// fp16 networks that cast their fp32 inputs inside): written straight into the model's input
// tensor on the GPU. The CPU path (the lip-sync engine's) is the same division, so the two
// agree exactly.
extern "C" __global__ void face_input_f32(const unsigned char* crops, float* out) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int b = blockIdx.z;
    if (x >= CROP || y >= CROP) return;
    const int plane = CROP * CROP;
    const unsigned char* p = crops + (size_t)b * plane * 3 + (y * CROP + x) * 3;
    float* o = out + (size_t)b * 6 * plane + y * CROP + x;
    for (int c = 0; c < 3; c++) {
        float v = (float)p[2 - c] / 255.0f;
        o[c * plane] = y < CROP / 2 ? v : 0.0f;
        o[(3 + c) * plane] = v;
    }
}

// Bilinear sample of a CROP x CROP plane at (u, v), clamped to its edge.
__device__ __forceinline__ float sample_u8(const unsigned char* p, float u, float v) {
    u = fminf(fmaxf(u, 0.0f), (float)(CROP - 1));
    v = fminf(fmaxf(v, 0.0f), (float)(CROP - 1));
    int x0 = (int)floorf(u), y0 = (int)floorf(v);
    int x1 = min(x0 + 1, CROP - 1), y1 = min(y0 + 1, CROP - 1);
    float wx = u - (float)x0, wy = v - (float)y0;
    float top = (float)p[y0 * CROP + x0] * (1.0f - wx) + (float)p[y0 * CROP + x1] * wx;
    float bottom = (float)p[y1 * CROP + x0] * (1.0f - wx) + (float)p[y1 * CROP + x1] * wx;
    return top * (1.0f - wy) + bottom * wy;
}
__device__ __forceinline__ float sample_f16(const unsigned short* p, float u, float v) {
    u = fminf(fmaxf(u, 0.0f), (float)(CROP - 1));
    v = fminf(fmaxf(v, 0.0f), (float)(CROP - 1));
    int x0 = (int)floorf(u), y0 = (int)floorf(v);
    int x1 = min(x0 + 1, CROP - 1), y1 = min(y0 + 1, CROP - 1);
    float wx = u - (float)x0, wy = v - (float)y0;
    float top = f16_to_f32(p[y0 * CROP + x0]) * (1.0f - wx) + f16_to_f32(p[y0 * CROP + x1]) * wx;
    float bottom = f16_to_f32(p[y1 * CROP + x0]) * (1.0f - wx) + f16_to_f32(p[y1 * CROP + x1]) * wx;
    return top * (1.0f - wy) + bottom * wy;
}

__device__ __forceinline__ float sample_f32(const float* p, float u, float v) {
    u = fminf(fmaxf(u, 0.0f), (float)(CROP - 1));
    v = fminf(fmaxf(v, 0.0f), (float)(CROP - 1));
    int x0 = (int)floorf(u), y0 = (int)floorf(v);
    int x1 = min(x0 + 1, CROP - 1), y1 = min(y0 + 1, CROP - 1);
    float wx = u - (float)x0, wy = v - (float)y0;
    float top = p[y0 * CROP + x0] * (1.0f - wx) + p[y0 * CROP + x1] * wx;
    float bottom = p[y1 * CROP + x0] * (1.0f - wx) + p[y1 * CROP + x1] * wx;
    return top * (1.0f - wy) + bottom * wy;
}
__device__ __forceinline__ float sample_plane(const unsigned short* p, float u, float v) {
    return sample_f16(p, u, v);
}
__device__ __forceinline__ float sample_plane(const float* p, float u, float v) {
    return sample_f32(p, u, v);
}

// Pixel (bx, by) of a rw x rh face box, `px` its RGBA bytes: the model's output (planar B, G, R,
// 0..1, CROP x CROP; fp16 or fp32) resized to the box and blended in through the feathered mask
// (CROP x CROP, 0..255). Where the mask is 0 the pixel, and always its alpha, is left alone.
template <typename Out>
__device__ __forceinline__ void blend_pixel(unsigned char* px, int bx, int by, int rw, int rh,
                                            const Out* output, const unsigned char* mask) {
    const int plane = CROP * CROP;
    float fx = (float)CROP / (float)max(rw, 1);
    float fy = (float)CROP / (float)max(rh, 1);
    float v = ((float)by + 0.5f) * fy - 0.5f;
    float u = ((float)bx + 0.5f) * fx - 0.5f;
    float alpha = sample_u8(mask, u, v) / 255.0f;
    if (alpha <= 0.0f) return;
    for (int ch = 0; ch < 3; ch++) {
        float model = fminf(fmaxf(sample_plane(output + (2 - ch) * plane, u, v), 0.0f), 1.0f) * 255.0f;
        float old = (float)px[ch];
        px[ch] = (unsigned char)roundf(old + (model - old) * alpha);
    }
}

// The model's fp16 output blended into the face box of the RGBA frame, in place (blend_pixel).
// One thread per box pixel.
extern "C" __global__ void paste(unsigned char* frame, int pitch, int rx, int ry, int rw, int rh,
                                 const unsigned short* output, const unsigned char* mask) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= rw || y >= rh) return;
    blend_pixel(frame + (size_t)(ry + y) * pitch + (rx + x) * 4, x, y, rw, rh, output, mask);
}

// BT.601 limited range, as GStreamer's videoconvert gives for standard-definition I420.
__device__ __forceinline__ float luma(float r, float g, float b) {
    return 16.0f + (65.481f * r + 128.553f * g + 24.966f * b) / 255.0f;
}
__device__ __forceinline__ float chroma_u(float r, float g, float b) {
    return 128.0f + (-37.797f * r - 74.203f * g + 112.0f * b) / 255.0f;
}
__device__ __forceinline__ float chroma_v(float r, float g, float b) {
    return 128.0f + (112.0f * r - 93.786f * g - 18.214f * b) / 255.0f;
}

// An RGBA frame (w x h, `pitch` bytes per row) to planar I420: Y (w x h), then U and V
// (ceil(w/2) x ceil(h/2)), each chroma sample the mean of its 2x2 block (edge pixels repeated
// for odd sizes). One thread per 2x2 block.
extern "C" __global__ void rgba_to_i420(const unsigned char* frame, int pitch, int w, int h,
                                        unsigned char* out) {
    int cx = blockIdx.x * blockDim.x + threadIdx.x;
    int cy = blockIdx.y * blockDim.y + threadIdx.y;
    int cw = (w + 1) / 2, ch = (h + 1) / 2;
    if (cx >= cw || cy >= ch) return;
    float su = 0.0f, sv = 0.0f;
    for (int dy = 0; dy < 2; dy++) {
        for (int dx = 0; dx < 2; dx++) {
            int x = min(2 * cx + dx, w - 1), y = min(2 * cy + dy, h - 1);
            const unsigned char* p = frame + (size_t)y * pitch + x * 4;
            float r = (float)p[0], g = (float)p[1], b = (float)p[2];
            if (2 * cx + dx < w && 2 * cy + dy < h) {
                out[(size_t)y * w + x] = (unsigned char)roundf(luma(r, g, b));
            }
            su = su + chroma_u(r, g, b);
            sv = sv + chroma_v(r, g, b);
        }
    }
    unsigned char* u = out + (size_t)w * h;
    unsigned char* v = u + (size_t)cw * ch;
    u[cy * cw + cx] = (unsigned char)roundf(su / 4.0f);
    v[cy * cw + cx] = (unsigned char)roundf(sv / 4.0f);
}

// A live output frame: the avatar frame `src` copied to `dst` (both `pitch` bytes a row, `h`
// rows), with the model's fp32 output (as ONNX Runtime leaves it) blended into the face box as
// `paste` does. One thread per 4-byte word of the frame (a pixel, or row padding, copied as it
// is).
extern "C" __global__ void compose(const unsigned char* src, unsigned char* dst, int pitch, int h,
                                   int rx, int ry, int rw, int rh, const float* output,
                                   const unsigned char* mask) {
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= pitch / 4 || y >= h) return;
    size_t at = (size_t)y * pitch + (size_t)x * 4;
    unsigned int word = *(const unsigned int*)(src + at);
    int bx = x - rx, by = y - ry;
    if (bx >= 0 && by >= 0 && bx < rw && by < rh) {
        blend_pixel((unsigned char*)&word, bx, by, rw, rh, output, mask);
    }
    *(unsigned int*)(dst + at) = word;
}
