/* icuuc.dll for the Wine build prefix only (packaging/build-windows-wine.sh); never bundled.
 *
 * Why: Qt6Core.dll of the PySide6 wheels links to Windows' own ICU (system32\icuuc.dll, part of
 * Windows 10 1703 and later) for the text codecs that Qt does not carry itself, and imports the 20
 * ucnv_* functions below from it. Wine 8.0 has no icuuc.dll, so Qt6Core.dll (and with it PySide6)
 * does not load at all. This stand-in offers no converters: ucnv_open fails as ICU does for an
 * unknown name, and no converter list is offered, so Qt falls back to its built-in codecs (UTF-8,
 * UTF-16, UTF-32, Latin-1, the system code page), which is all CASA Studio uses. The functions that
 * take a converter can never be reached (none is ever opened); they only report an error.
 * The signatures are ICU 4C's (unicode/ucnv.h, unicode/ucnv_err.h). */

typedef int UErrorCode;        /* > 0: failure */
typedef signed char int8_t_;
#define U_ILLEGAL_ARGUMENT_ERROR 1
#define U_FILE_ACCESS_ERROR 4  /* what ICU reports for a converter name it has no data for */
#define EXPORT __declspec(dllexport)

static void fail(UErrorCode *err, UErrorCode code)
{
    if (err && *err <= 0) *err = code;
}

EXPORT void *ucnv_open(const char *name, UErrorCode *err) { (void)name; fail(err, U_FILE_ACCESS_ERROR); return 0; }
EXPORT void ucnv_close(void *cnv) { (void)cnv; }
EXPORT int ucnv_countAvailable(void) { return 0; }
EXPORT const char *ucnv_getAvailableName(int n) { (void)n; return 0; }
EXPORT const char *ucnv_getStandardName(const char *name, const char *standard, UErrorCode *err)
{
    (void)name; (void)standard; (void)err; /* ICU: NULL, and no error, for a name it does not know */
    return 0;
}
EXPORT void ucnv_reset(void *cnv) { (void)cnv; }
EXPORT int8_t_ ucnv_getMaxCharSize(const void *cnv) { (void)cnv; return 1; }
EXPORT const char *ucnv_getName(const void *cnv, UErrorCode *err) { (void)cnv; fail(err, U_ILLEGAL_ARGUMENT_ERROR); return 0; }
EXPORT void ucnv_getToUCallBack(const void *cnv, void **action, const void **context)
{
    (void)cnv; if (action) *action = 0; if (context) *context = 0;
}
EXPORT void ucnv_getFromUCallBack(const void *cnv, void **action, const void **context)
{
    (void)cnv; if (action) *action = 0; if (context) *context = 0;
}
EXPORT void ucnv_setToUCallBack(void *cnv, void *action, const void *context, void **old_action,
                                const void **old_context, UErrorCode *err)
{
    (void)cnv; (void)action; (void)context; (void)old_action; (void)old_context;
    fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}
EXPORT void ucnv_setFromUCallBack(void *cnv, void *action, const void *context, void **old_action,
                                  const void **old_context, UErrorCode *err)
{
    (void)cnv; (void)action; (void)context; (void)old_action; (void)old_context;
    fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}
EXPORT void ucnv_toUnicode(void *cnv, void **target, const void *target_limit, const char **source,
                           const char *source_limit, int *offsets, signed char flush, UErrorCode *err)
{
    (void)cnv; (void)target; (void)target_limit; (void)source; (void)source_limit; (void)offsets; (void)flush;
    fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}
EXPORT void ucnv_fromUnicode(void *cnv, char **target, const char *target_limit, const void **source,
                             const void *source_limit, int *offsets, signed char flush, UErrorCode *err)
{
    (void)cnv; (void)target; (void)target_limit; (void)source; (void)source_limit; (void)offsets; (void)flush;
    fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}
EXPORT int ucnv_toUCountPending(const void *cnv, UErrorCode *err) { (void)cnv; fail(err, U_ILLEGAL_ARGUMENT_ERROR); return 0; }
EXPORT int ucnv_fromUCountPending(const void *cnv, UErrorCode *err) { (void)cnv; fail(err, U_ILLEGAL_ARGUMENT_ERROR); return 0; }
EXPORT void ucnv_cbToUWriteUChars(void *args, const void *source, int length, int offset_index, UErrorCode *err)
{
    (void)args; (void)source; (void)length; (void)offset_index;
    fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}
EXPORT void ucnv_cbFromUWriteUChars(void *args, const void **source, const void *source_limit, int offset_index,
                                    UErrorCode *err)
{
    (void)args; (void)source; (void)source_limit; (void)offset_index;
    fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}
/* the substitution callbacks (functions Qt installs on a converter) */
EXPORT void UCNV_FROM_U_CALLBACK_SUBSTITUTE(const void *context, void *args, const void *code_units, int length,
                                            int code_point, int reason, UErrorCode *err)
{
    (void)context; (void)args; (void)code_units; (void)length; (void)code_point; (void)reason;
    fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}
EXPORT void UCNV_TO_U_CALLBACK_SUBSTITUTE(const void *context, void *args, const char *code_units, int length,
                                          int reason, UErrorCode *err)
{
    (void)context; (void)args; (void)code_units; (void)length; (void)reason;
    fail(err, U_ILLEGAL_ARGUMENT_ERROR);
}

int __stdcall DllMainCRTStartup(void *instance, unsigned long reason, void *reserved)
{
    (void)instance; (void)reason; (void)reserved;
    return 1;
}
