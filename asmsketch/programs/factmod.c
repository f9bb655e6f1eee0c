#include <stdio.h>
int main(void) { unsigned long f = 1, m = 1000000007ul; for (unsigned long i = 1; i <= 100000; i++) f = f * i % m; printf("%lu\n", f); return 0; }
