#include <stdio.h>
int main(void) { unsigned crc = 0xFFFFFFFFu; for (int i = 0; i < 4096; i++) { crc ^= (unsigned)(i & 255); for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u))); } printf("%08x\n", ~crc); return 0; }
