/* bcryptprimitives.dll for the Wine build prefix only (packaging/build-windows-wine.sh); never bundled.
 *
 * Why: Rust's standard library (since 1.78) takes its random numbers from
 * bcryptprimitives.dll!ProcessPrng, which Wine 8.0 does not have, so the Rust extensions in the
 * bundle (safetensors, hf_xet) fail to load under Wine. Real Windows 10/11 has it. This stand-in
 * offers ProcessPrng over bcrypt.dll!BCryptGenRandom with the system RNG, which Wine implements.
 * Enabled in the prefix with the DLL override bcryptprimitives=native,builtin. */

typedef long NTSTATUS;
#define BCRYPT_USE_SYSTEM_PREFERRED_RNG 0x00000002

__declspec(dllimport) NTSTATUS __stdcall BCryptGenRandom(void *algorithm, unsigned char *buffer,
                                                         unsigned long count, unsigned long flags);

/* BOOL WINAPI ProcessPrng(PBYTE pbData, SIZE_T cbData): documented to always return TRUE */
__declspec(dllexport) int __stdcall ProcessPrng(unsigned char *data, unsigned long long size)
{
    while (size > 0) { /* BCryptGenRandom takes a 32-bit count */
        unsigned long chunk = size > 0x40000000ull ? 0x40000000ul : (unsigned long)size;
        if (BCryptGenRandom(0, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) < 0) return 0;
        data += chunk;
        size -= chunk;
    }
    return 1;
}

int __stdcall DllMainCRTStartup(void *instance, unsigned long reason, void *reserved)
{
    (void)instance; (void)reason; (void)reserved;
    return 1;
}
